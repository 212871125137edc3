"""Data files: JSON, JSON Lines, YAML and XML as readable key paths.

Every value becomes a line that names where it sits: ``数据库.端口: 5432``, ``员工[0].姓名: 张三``, keys as
they are written (Chinese included), list positions from 0 as in JSONPath, a list of plain values on one line
(``标签: 重要, 紧急``). A line never loses its path, whatever chunk it lands in, and a long string stays whole
on its line. Sections follow the data's own records:

- a JSON or YAML object: its plain values first, as lines without a heading, then one level-1 section per
  key that holds an object or a list of objects, its lines written from the top (``数据库.端口``);
- a JSON array, each JSON Lines record: a section ``record 3`` (counted from 1, like lines; with the record's
  title, name or id when it has one: ``record 3: 张三``), its lines written from the record;
- a YAML stream of several documents: a section ``document 2`` each, their keys one level down;
- XML: one section per child of the root element, titled with its name and its id or name attribute
  (``book id=bk101``), its lines written from it: ``author: …``, ``price@currency: USD``. Text mixed with
  markup (``<p>a <b>b</b> c</p>``) is one value.

Untrusted input is bounded: at most ``MAX_DEPTH`` levels of nesting, ``MAX_VALUES`` lines and
``MAX_TEXT_CHARS`` of text. PyYAML's safe loader shares an aliased value rather than copying it, but anything
that walks the result meets every copy (and PyYAML releases older than the fix of yaml/pyyaml#897 copy merge
keys' pairs, ``<<: *a``, while building), so a YAML document whose aliases would repeat more than
``MAX_VALUES`` nodes ("billion laughs") is refused from its node graph, before it is built. XML is read by
lxml without entity expansion, DTDs or network: an entity reference stays as written (``&name;``), an external
entity is never fetched, and libxml2 refuses an entity whose expansion would explode.
"""

from __future__ import annotations

import datetime
import itertools
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import yaml
from lxml import etree

from app.rag.errors import DocumentParseError
from app.rag.filetypes import FORMAT_OF
from app.rag.types import FileType, ParsedDocument
from ingest.formats.archives import safe_xml_parser
from ingest.formats.builder import DocumentBuilder, one_line
from ingest.formats.tables import MAX_TEXT_CHARS
from ingest.parsing import decode_text

# Data files people write or export rarely nest more than a dozen levels; the bound keeps our recursion far
# from Python's limit and stops a self-referencing YAML alias (&a [*a]).
MAX_DEPTH = 64
# Lines of ``path: value``, as many as the filled cells a spreadsheet may have.
MAX_VALUES = 1_000_000

# Keys whose value names a record, for its section's heading: names before ids, tried in this order.
_TITLE_KEYS = ("title", "标题", "name", "名称", "姓名", "id", "编号")
_TITLE_ATTRIBUTES = ("id", "name")
_MAX_RECORD_TITLE_CHARS = 80
_LIST_SEPARATOR = ", "
# libyaml's parser, in C, is faster than PyYAML's own and limits nesting to 1,000 levels itself.
_YAML_LOADER = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader


def parse_json(data: bytes) -> ParsedDocument:
    writer = _PathWriter(FileType.JSON)
    writer.write_document(json.loads(_decoded(data)), level=1)
    return writer.build()


def parse_jsonl(data: bytes) -> ParsedDocument:
    writer = _PathWriter(FileType.JSONL)
    record_number = 0
    for line_number, line in enumerate(_decoded(data).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DocumentParseError(
                f"line {line_number:,} of the {writer.label} file is not valid JSON ({exc.msg}); "
                "each line must hold one whole JSON value"
            ) from exc
        record_number += 1
        writer.write_record(record, record_number, level=1)
    return writer.build()


def parse_yaml(data: bytes) -> ParsedDocument:
    writer = _PathWriter(FileType.YAML)
    documents: list[Any] = []
    # The loader's own steps, so that each document's node graph, in which an alias is a second reference to
    # its anchor's node, is measured before it is built.
    loader = _YAML_LOADER(_decoded(data))
    try:
        while loader.check_node():
            # Never None after check_node; the stubs cannot know.
            node = loader.get_node()
            if node is not None:
                _check_alias_expansion(node, writer.label)
                documents.append(loader.construct_document(node))
    finally:
        loader.dispose()
    documents = [document for document in documents if document is not None]
    if len(documents) == 1:
        writer.write_document(documents[0], level=1)
    else:
        for number, document in enumerate(documents, start=1):
            writer.write_section(_titled(f"document {number}", document), level=1)
            writer.write_document(document, level=2)
    return writer.build()


def parse_xml(data: bytes) -> ParsedDocument:
    writer = _PathWriter(FileType.XML)
    # The bytes, not decoded text: the XML declaration names the encoding and lxml honours it.
    root = etree.fromstring(data, safe_xml_parser())
    children = _child_elements(root)
    if not children or _is_mixed(root):
        writer.write_lines(_element_lines(root, "", depth=0))
        return writer.build()
    # Like a JSON object's plain values, the root's attributes and childless children come first, unheaded.
    records = [child for child in children if _child_elements(child)]
    fields = [child for child in children if not _child_elements(child)]
    writer.write_lines(itertools.chain(_attribute_lines(root, ""), _children_lines(fields, "", depth=1)))
    repeated = _repeated_names(records)
    ordinals: dict[str, int] = {}
    for record in records:
        name = etree.QName(record).localname
        ordinals[name] = ordinals.get(name, 0) + 1
        writer.write_section(_element_title(record, ordinals[name] if name in repeated else None), level=1)
        writer.write_lines(_element_lines(record, "", depth=1))
    return writer.build()


def _decoded(data: bytes) -> str:
    # ingest.parsing imports this module to dispatch to it, so its decoder is imported when first needed.
    return decode_text(data)


def _check_alias_expansion(root: yaml.Node, label: str) -> None:
    """Refuse a YAML document whose aliases repeat more than ``MAX_VALUES`` nodes ("billion laughs")."""
    sizes: dict[int, int] = {}
    expanded = _expanded_size(root, sizes, depth=0, label=label)
    if expanded - len(sizes) > MAX_VALUES:
        raise DocumentParseError(
            f"the {label} file's aliases (*name) repeat more than {MAX_VALUES:,} values, the limit for one "
            "document; it looks built to exhaust a parser"
        )


def _expanded_size(node: yaml.Node, sizes: dict[int, int], *, depth: int, label: str) -> int:
    """How many nodes ``node`` stands for once every alias in it is expanded; ``sizes`` remembers each node's,
    so the count takes one visit per distinct node however often it is referred to."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    # A node that refers to itself (&a [*a]) is never done, and is caught here.
    if depth > MAX_DEPTH:
        raise DocumentParseError(
            f"the {label} file is nested more than {MAX_DEPTH} levels deep, the limit we read"
        )
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    size = 1 + sum(_expanded_size(child, sizes, depth=depth + 1, label=label) for child in children)
    sizes[id(node)] = size
    return size


# --- the layout shared by every format ------------------------------------------------------------------


class _PathWriter:
    """Writes values as sections of path lines, within one document's budgets."""

    def __init__(self, file_type: FileType) -> None:
        self.label = FORMAT_OF[file_type].label
        self._builder = DocumentBuilder(file_type)
        self._values = 0

    def write_document(self, value: Any, *, level: int) -> None:
        """A whole document: plain top-level values as lines, then a section per key holding records."""
        if isinstance(value, dict) and value:
            plain = {key: item for key, item in value.items() if _is_plain(item)}
            if plain:
                self.write_lines(self._lines_of(plain, "", depth=0))
            for key, item in value.items():
                if key not in plain:
                    self.write_section(_key_text(key), level=level)
                    self.write_lines(self._lines_of(item, _key_text(key), depth=1))
        elif isinstance(value, list) and not _is_plain(value):
            for number, record in enumerate(value, start=1):
                self.write_record(record, number, level=level)
        else:
            self.write_lines(self._lines_of(value, "", depth=0))

    def write_record(self, record: Any, number: int, *, level: int) -> None:
        self.write_section(_titled(f"record {number}", record), level=level)
        self.write_lines(self._lines_of(record, "", depth=1))

    def write_section(self, title: str, *, level: int) -> None:
        self._builder.heading(level, title)

    def write_lines(self, lines: Iterator[str]) -> None:
        block: list[str] = []
        chars = self._builder.length
        for line in lines:
            self._values += 1
            if self._values > MAX_VALUES:
                raise DocumentParseError(
                    f"the {self.label} file holds more than {MAX_VALUES:,} values, the limit for one "
                    "document; split it into smaller files"
                )
            chars += len(line) + 1
            if chars > MAX_TEXT_CHARS:
                raise DocumentParseError(
                    f"the {self.label} file's text is longer than {MAX_TEXT_CHARS:,} characters, the limit for "
                    "one document; split it into smaller files"
                )
            block.append(line)
        self._builder.block("\n".join(block))

    def build(self) -> ParsedDocument:
        # Not the first heading, the builder's fallback: a key or a record is no title for the whole file.
        return replace(self._builder.build(), title="")

    def _lines_of(self, value: Any, path: str, *, depth: int) -> Iterator[str]:
        if depth > MAX_DEPTH:
            raise DocumentParseError(
                f"the {self.label} file is nested more than {MAX_DEPTH} levels deep, the limit we read"
            )
        if isinstance(value, dict) and value:
            for key, item in value.items():
                name = _key_text(key)
                yield from self._lines_of(item, f"{path}.{name}" if path else name, depth=depth + 1)
        elif isinstance(value, list) and value and not _is_plain(value):
            for index, item in enumerate(value):
                yield from self._lines_of(item, f"{path}[{index}]", depth=depth + 1)
        else:
            text = _plain_text(value)
            yield f"{path}: {text}" if path else text


def _is_plain(value: Any) -> bool:
    """A value written on one line: a scalar, a list of scalars, or an empty object."""
    if isinstance(value, list):
        return not any(isinstance(item, dict | list) for item in value)
    return not isinstance(value, dict) or not value


def _plain_text(value: Any) -> str:
    if isinstance(value, list):
        return _LIST_SEPARATOR.join(_plain_text(item) for item in value) if value else "[]"
    if isinstance(value, dict):
        return "{}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, bytes):
        # YAML's !!binary: its bytes mean nothing as text.
        return f"({len(value):,} bytes of binary data)"
    return one_line(str(value))


def _key_text(key: Any) -> str:
    return one_line(key if isinstance(key, str) else _plain_text(key)) or '""'


def _titled(label: str, record: Any) -> str:
    """``record 3: 张三`` for a record with a title, name or id; ``record 3`` otherwise."""
    if isinstance(record, dict):
        for key in _TITLE_KEYS:
            value = record.get(key)
            if value is not None and not isinstance(value, dict | list) and (text := _plain_text(value)):
                return f"{label}: {text[:_MAX_RECORD_TITLE_CHARS]}"
    return label


# --- XML ------------------------------------------------------------------------------------------------


def _element_lines(element: etree._Element, path: str, *, depth: int) -> Iterator[str]:
    if depth > MAX_DEPTH:
        raise DocumentParseError(
            f"the XML file is nested more than {MAX_DEPTH} levels deep, the limit we read"
        )
    yield from _attribute_lines(element, path)
    children = _child_elements(element)
    if children and not _is_mixed(element):
        yield from _children_lines(children, path, depth=depth + 1)
    # Text interleaved with markup (<p>a <b>b</b> c</p>) reads as the sentence it forms.
    elif text := one_line("".join(element.itertext())):
        yield f"{path}: {text}" if path else text


def _children_lines(children: list[etree._Element], path: str, *, depth: int) -> Iterator[str]:
    """Lines of sibling elements, numbered from 0 where a name repeats: ``tag[0]``, ``tag[1]``."""
    repeated = _repeated_names(children)
    counts: dict[str, int] = {}
    for child in children:
        name = etree.QName(child).localname
        child_path = f"{path}.{name}" if path else name
        if name in repeated:
            child_path += f"[{counts.get(name, 0)}]"
            counts[name] = counts.get(name, 0) + 1
        yield from _element_lines(child, child_path, depth=depth)


def _attribute_lines(element: etree._Element, path: str) -> Iterator[str]:
    for name, value in element.attrib.items():
        yield f"{path}@{etree.QName(name).localname}: {one_line(value)}"


def _child_elements(element: etree._Element) -> list[etree._Element]:
    # Comments, processing instructions and entity references are nodes too, with a tag that is no name.
    return [child for child in element if isinstance(child.tag, str)]


def _is_mixed(element: etree._Element) -> bool:
    """Whether text sits among an element's children (an entity reference left unexpanded is text too)."""
    if (element.text or "").strip():
        return True
    return any(child.tag is etree.Entity or (child.tail or "").strip() for child in element)


def _repeated_names(elements: list[etree._Element]) -> set[str]:
    seen: set[str] = set()
    repeated: set[str] = set()
    for element in elements:
        name = etree.QName(element).localname
        (repeated if name in seen else seen).add(name)
    return repeated


def _element_title(element: etree._Element, ordinal: int | None) -> str:
    """``book id=bk101``; ``item 3`` for the third of several unnamed ``item`` elements; else the name."""
    name = etree.QName(element).localname
    for attribute, value in element.attrib.items():
        if etree.QName(attribute).localname in _TITLE_ATTRIBUTES and value.strip():
            return f"{name} {etree.QName(attribute).localname}={one_line(value)[:_MAX_RECORD_TITLE_CHARS]}"
    return name if ordinal is None else f"{name} {ordinal}"
