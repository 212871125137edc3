"""Slides, OpenDocument text and books: PPTX, ODP, ODT and EPUB.

Slides become one section each: a level-1 heading ``Slide N: <title>``, the slide's text boxes and tables in
reading order (top to bottom, then left to right), and the speaker notes last, as a block that starts with
``Notes:``. OpenDocument text keeps its outline (``text:h`` levels) as headings, like a DOCX file. A book's
chapters follow its spine, and the headings inside them become the document's headings.

All four are ZIP containers: ``open_zip`` refuses bombs from the central directory before any library inflates
a member. The XML inside is read with entity expansion and external entities off: python-pptx and EbookLib
parse with lxml and ``resolve_entities=False`` (and lxml's defaults: no DTD loading, no network), EbookLib's
chapters go to lxml's HTML parser, which ignores entity declarations, and odfpy parses with ``defusedxml.sax``.
Before a library sees a file we also refuse, with a message that says why, the entity declarations that no
document of these kinds needs; for OpenDocument we check that each XML part is well-formed too, because odfpy
answers a parse error by printing the whole part to stdout and carrying on with what it had read.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote
from xml.sax import SAXParseException
from xml.sax.handler import ContentHandler

import defusedxml.sax
import pptx
from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning
from defusedxml import DefusedXmlException
from ebooklib import epub
from odf.element import Node
from odf.namespaces import DCNS, DRAWNS, METANS, OFFICENS, PRESENTATIONNS, STYLENS, SVGNS, TABLENS, TEXTNS
from odf.opendocument import load as load_odf
from pptx.enum.shapes import PP_PLACEHOLDER
from pptx.opc.constants import RELATIONSHIP_TYPE as RT
from pptx.parts.coreprops import CorePropertiesPart
from pptx.presentation import Presentation as PptxPresentation
from pptx.shapes.autoshape import Shape
from pptx.shapes.base import BaseShape
from pptx.shapes.graphfrm import GraphicFrame
from pptx.shapes.group import GroupShape
from pptx.slide import Slide
from pptx.table import Table as PptxTable

from app.rag.errors import DocumentParseError
from app.rag.filetypes import FORMAT_OF
from app.rag.types import FileType, Heading, ParsedDocument
from ingest.formats.archives import open_zip, read_member
from ingest.formats.builder import DocumentBuilder, one_line
from ingest.parsing import TextBuilder, walk_html

# Groups inside groups are walked this deep; real decks nest two or three levels, a hostile one thousands.
_MAX_GROUP_DEPTH = 10
_NOTES_PREFIX = "Notes: "
_CELL_SEPARATOR = " | "
# XML parts may be UTF-8 or UTF-16.
_ENTITY_DECLARATION = tuple("<!ENTITY".encode(codec) for codec in ("utf-8", "utf-16-le", "utf-16-be"))


def _label(file_type: FileType) -> str:
    return FORMAT_OF[file_type].label


def _refuse_entity_declarations(data: bytes, label: str, is_xml_part: Callable[[str], bool]) -> None:
    """Open the archive (``open_zip`` refuses bombs) and refuse any XML part that declares entities.

    The libraries' parsers would not expand them; this is here so that the user learns why the file is refused
    instead of reading a parser's message about amplification factors or a half-read document.
    """
    with open_zip(data, label) as archive:
        for name in archive.namelist():
            if is_xml_part(name) and any(
                marker in read_member(archive, name) for marker in _ENTITY_DECLARATION
            ):
                raise DocumentParseError(
                    f"the {label} file declares XML entities in {name}, which documents of this kind never "
                    "need; it is refused as possibly hostile"
                )


def _slide_heading(number: int, title: str) -> str:
    return f"Slide {number}: {title}" if title else f"Slide {number}"


# --- PPTX -----------------------------------------------------------------------------------------

# Placeholders that repeat the deck's furniture on every slide, not its content.
_PPTX_FURNITURE = frozenset(
    {PP_PLACEHOLDER.DATE, PP_PLACEHOLDER.FOOTER, PP_PLACEHOLDER.SLIDE_NUMBER, PP_PLACEHOLDER.HEADER}
)


def parse_pptx(data: bytes) -> ParsedDocument:
    _refuse_entity_declarations(data, _label(FileType.PPTX), _is_ooxml_part)
    presentation = pptx.Presentation(io.BytesIO(data))
    builder = DocumentBuilder(FileType.PPTX)
    first_title = ""
    for number, slide in enumerate(presentation.slides, start=1):
        title_shape = slide.shapes.title
        title = one_line(_pptx_shape_text(title_shape)) if title_shape is not None else ""
        first_title = first_title or title
        builder.heading(1, _slide_heading(number, title))
        shapes = [
            shape for shape in slide.shapes if title_shape is None or shape.element is not title_shape.element
        ]
        for block in _pptx_blocks(shapes, depth=0):
            builder.block(block)
        notes = _pptx_notes(slide)
        if notes:
            builder.block(_NOTES_PREFIX + notes)
    title, author = _pptx_properties(presentation)
    if author:
        builder.metadata.append(("Author", author))
    return builder.build(title or first_title)


def _is_ooxml_part(name: str) -> bool:
    return name.endswith((".xml", ".rels"))


def _pptx_properties(presentation: PptxPresentation) -> tuple[str, str]:
    """The title and author in docProps/core.xml, empty where there are none.

    Not ``presentation.core_properties``: for a file without the part, that invents the title "PowerPoint
    Presentation".
    """
    try:
        properties = presentation.part.package.part_related_by(RT.CORE_PROPERTIES)
    # A missing part (KeyError) or a malformed one should cost us the title, not the document.
    except Exception:
        return "", ""
    if not isinstance(properties, CorePropertiesPart):
        return "", ""
    return properties.title or "", properties.author or ""


def _pptx_blocks(shapes: list[BaseShape], *, depth: int) -> Iterator[str]:
    for shape in sorted(shapes, key=_pptx_position):
        if shape.is_placeholder and shape.placeholder_format.type in _PPTX_FURNITURE:
            continue
        if isinstance(shape, GroupShape):
            if depth < _MAX_GROUP_DEPTH:
                yield from _pptx_blocks(list(shape.shapes), depth=depth + 1)
        elif isinstance(shape, GraphicFrame) and shape.has_table:
            yield _pptx_table_text(shape.table)
        else:
            yield _pptx_shape_text(shape)


def _pptx_position(shape: BaseShape) -> tuple[int, int]:
    # A shape without a position of its own (rare: placeholders inherit theirs) keeps its place in z-order,
    # which sorted() preserves among equal keys.
    return (shape.top or 0, shape.left or 0)


def _pptx_shape_text(shape: BaseShape) -> str:
    # Pictures, connectors and charts have no text frame; every autoshape and text placeholder is a Shape.
    if not isinstance(shape, Shape):
        return ""
    # python-pptx writes a soft line break (<a:br/>) as a vertical tab.
    text: str = shape.text_frame.text
    return text.replace("\v", "\n")


def _pptx_table_text(table: PptxTable) -> str:
    rows: list[str] = []
    for row in table.rows:
        # A spanned cell is the part of a merged cell that another cell's text already covers.
        cells = [one_line(cell.text) for cell in row.cells if not cell.is_spanned]
        if any(cells):
            rows.append(_CELL_SEPARATOR.join(cells))
    return "\n".join(rows)


def _pptx_notes(slide: Slide) -> str:
    # Reading ``notes_slide`` on a slide without notes would create them.
    if not slide.has_notes_slide:
        return ""
    frame = slide.notes_slide.notes_text_frame
    return frame.text.replace("\v", "\n").strip() if frame is not None else ""


# --- OpenDocument (ODT, ODP) ----------------------------------------------------------------------

_H = (TEXTNS, "h")
_P = (TEXTNS, "p")
_LIST = (TEXTNS, "list")
_NOTE = (TEXTNS, "note")
_TABLE = (TABLENS, "table")
_TABLE_ROW = (TABLENS, "table-row")
_TABLE_CELL = (TABLENS, "table-cell")
_TABLE_ROW_CONTAINERS = frozenset(
    {(TABLENS, "table-header-rows"), (TABLENS, "table-rows"), (TABLENS, "table-row-group")}
)
_PAGE = (DRAWNS, "page")
_GROUP = (DRAWNS, "g")
_NOTES = (PRESENTATIONNS, "notes")
# Not the document's text: navigation that repeats the headings (tables of contents, indexes), deleted text
# kept for change tracking, reviewers' comments, form controls, alt text, and slide notes (read on their own).
_ODF_SKIPPED = frozenset(
    {
        (TEXTNS, "table-of-content"),
        (TEXTNS, "alphabetical-index"),
        (TEXTNS, "illustration-index"),
        (TEXTNS, "table-index"),
        (TEXTNS, "object-index"),
        (TEXTNS, "user-index"),
        (TEXTNS, "bibliography"),
        (TEXTNS, "tracked-changes"),
        (OFFICENS, "annotation"),
        (OFFICENS, "forms"),
        (SVGNS, "title"),
        (SVGNS, "desc"),
        _NOTES,
    }
)
# Footnotes are read after their paragraph, so that they do not split its sentence.
_ODF_SKIPPED_INLINE = _ODF_SKIPPED | {_NOTE}
_ODF_FURNITURE_CLASSES = frozenset({"page-number", "date-time", "footer", "header"})
# In ODF text, any run of whitespace in the XML is one space; explicit spaces are <text:s text:c="n"/>.
_ODF_WHITESPACE = re.compile(r"[ \t\r\n]+")
# A hostile <text:s text:c="999999999"/> must not allocate a gigabyte of spaces.
_MAX_SPACES = 64
# LibreOffice names pages it was not told a name for "page1", "page2"...; such a name says nothing.
_AUTOMATIC_PAGE_NAME = re.compile(r"(?:page|slide)\s*\d+", re.IGNORECASE)
_LENGTH = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*([a-z]*)\s*")
_MILLIMETRES_PER_UNIT = {
    "": 1.0,
    "mm": 1.0,
    "cm": 10.0,
    "in": 25.4,
    "pt": 25.4 / 72,
    "pc": 25.4 / 6,
    "px": 25.4 / 96,
}


def parse_odt(data: bytes) -> ParsedDocument:
    label = _label(FileType.ODT)
    document = _load_odf(data, label)
    body = _odf_body(document, "text", label)
    builder = DocumentBuilder(FileType.ODT)
    title_styles = _odf_title_styles(document)
    for level, text in _odf_blocks(body, title_styles=title_styles):
        if level is None:
            builder.block(text)
        else:
            builder.heading(level, text)
    title, author = _odf_meta(document)
    if author:
        builder.metadata.append(("Author", author))
    return builder.build(title)


def parse_odp(data: bytes) -> ParsedDocument:
    label = _label(FileType.ODP)
    document = _load_odf(data, label)
    body = _odf_body(document, "presentation", label)
    builder = DocumentBuilder(FileType.ODP)
    first_title = ""
    pages = [node for node in _odf_elements(body) if node.qname == _PAGE]
    for number, page in enumerate(pages, start=1):
        shapes = [node for node in _odf_elements(page) if node.qname[0] == DRAWNS]
        title_frame = next((shape for shape in shapes if _odf_class(shape) == "title"), None)
        title = one_line(_odf_inline_text(title_frame)) if title_frame is not None else ""
        if not title:
            name = _odp_page_name(page)
            title = "" if _AUTOMATIC_PAGE_NAME.fullmatch(name) else name
        first_title = first_title or title
        builder.heading(1, _slide_heading(number, title))
        for block in _odp_blocks([shape for shape in shapes if shape is not title_frame], depth=0):
            builder.block(block)
        notes = "\n".join(
            text for node in _odf_elements(page) if node.qname == _NOTES for _, text in _odf_blocks(node)
        )
        if notes.strip():
            builder.block(_NOTES_PREFIX + notes.strip())
    title, author = _odf_meta(document)
    if author:
        builder.metadata.append(("Author", author))
    return builder.build(title or first_title)


def _odp_page_name(page: Any) -> str:
    # odfpy keeps draw:name as an NCName, also when reading a file: spaces become "_20_", colons "_3a_".
    name = str(page.getAttrNS(DRAWNS, "name") or "")
    return one_line(name.replace("_20_", " ").replace("_3a_", ":"))


def _load_odf(data: bytes, label: str) -> Any:
    with open_zip(data, label) as archive:
        for name in archive.namelist():
            if name.endswith(".xml"):
                _check_odf_xml(read_member(archive, name), name, label)
    return load_odf(io.BytesIO(data))


def _check_odf_xml(part: bytes, name: str, label: str) -> None:
    """Refuse a part odfpy would choke on: a DTD (OpenDocument never has one) or XML that is not well-formed."""
    try:
        defusedxml.sax.parseString(part, ContentHandler(), forbid_dtd=True)
    except DefusedXmlException as exc:
        raise DocumentParseError(
            f"the {label} file declares a DTD or XML entities in {name}, which OpenDocument files never do; "
            "it may be hostile"
        ) from exc
    except SAXParseException as exc:
        raise DocumentParseError(
            f"the {label} file is damaged: {name} is not well-formed XML ({exc.getMessage()} at line "
            f"{exc.getLineNumber()})"
        ) from exc


def _odf_body(document: Any, kind: str, label: str) -> Any:
    for node in _odf_elements(document.body):
        if node.qname == (OFFICENS, kind):
            return node
    raise DocumentParseError(
        f"the {label} file has no {kind} body; it may be another kind of OpenDocument file"
    )


def _odf_elements(node: Any) -> Iterator[Any]:
    return (child for child in node.childNodes if child.nodeType == Node.ELEMENT_NODE)


def _odf_class(shape: Any) -> str:
    return str(shape.getAttrNS(PRESENTATIONNS, "class") or "")


def _odf_title_styles(document: Any) -> frozenset[str]:
    """The paragraph styles that make a ``text:p`` the document's title, as DOCX's "Title" style does."""
    names = {"Title"}
    for style in _odf_elements(document.automaticstyles):
        if style.getAttrNS(STYLENS, "parent-style-name") == "Title":
            names.add(style.getAttrNS(STYLENS, "name"))
    return frozenset(names)


def _odf_meta(document: Any) -> tuple[str, str]:
    """The document's title and author from meta.xml (empty where it has none)."""
    found: dict[tuple[str, str], str] = {}
    for node in _odf_elements(document.meta):
        found.setdefault(node.qname, one_line(_odf_inline_text(node)))
    author = found.get((DCNS, "creator")) or found.get((METANS, "initial-creator")) or ""
    return found.get((DCNS, "title"), ""), author


def _odf_blocks(
    container: Any, *, title_styles: frozenset[str] = frozenset()
) -> Iterator[tuple[int | None, str]]:
    """The container's headings (with their level) and blocks (level None), in document order.

    Iterative, like every walk here: a hostile file can nest sections or frames far deeper than Python's
    recursion limit.
    """
    stack = list(reversed(list(_odf_elements(container))))
    while stack:
        node = stack.pop()
        qname = node.qname
        if qname == _H:
            yield _odf_outline_level(node), _odf_inline_text(node)
            yield from _odf_notes(node)
        elif qname == _P:
            level = 1 if node.getAttrNS(TEXTNS, "style-name") in title_styles else None
            yield level, _odf_inline_text(node)
            yield from _odf_notes(node)
        elif qname == _LIST:
            yield None, _odf_list_text(node)
        elif qname == _TABLE:
            yield None, _odf_table_text(node)
        elif qname not in _ODF_SKIPPED:
            stack.extend(reversed(list(_odf_elements(node))))


def _odf_outline_level(heading: Any) -> int:
    try:
        return int(heading.getAttrNS(TEXTNS, "outline-level") or 1)
    except ValueError:
        return 1


def _odf_inline_text(element: Any) -> str:
    """A paragraph's text: spaces, tabs and line breaks as ODF means them; nested paragraphs on new lines."""
    parts: list[str] = []
    stack = list(reversed(element.childNodes))
    while stack:
        node = stack.pop()
        if node.nodeType != Node.ELEMENT_NODE:
            parts.append(_ODF_WHITESPACE.sub(" ", getattr(node, "data", "") or ""))
            continue
        qname = node.qname
        if qname == (TEXTNS, "s"):
            parts.append(" " * _odf_space_count(node))
        elif qname == (TEXTNS, "tab"):
            parts.append("\t")
        elif qname == (TEXTNS, "line-break"):
            parts.append("\n")
        elif qname not in _ODF_SKIPPED_INLINE:
            # A paragraph in a text box or a table cell inside this element.
            if qname in (_P, _H) and parts:
                parts.append("\n")
            stack.extend(reversed(node.childNodes))
    return "".join(parts).strip()


def _odf_space_count(space: Any) -> int:
    try:
        return max(1, min(int(space.getAttrNS(TEXTNS, "c") or 1), _MAX_SPACES))
    except ValueError:
        return 1


def _odf_notes(paragraph: Any) -> Iterator[tuple[None, str]]:
    stack = list(_odf_elements(paragraph))
    notes: list[Any] = []
    while stack:
        node = stack.pop()
        if node.qname == _NOTE:
            notes.append(node)
        elif node.qname not in _ODF_SKIPPED:
            stack.extend(_odf_elements(node))
    # Collected from a stack, so last first.
    for note in reversed(notes):
        citation = body = ""
        for part in _odf_elements(note):
            if part.qname == (TEXTNS, "note-citation"):
                citation = one_line(_odf_inline_text(part))
            elif part.qname == (TEXTNS, "note-body"):
                body = _odf_inline_text(part)
        if body:
            yield None, f"[{citation}] {body}" if citation else body


def _odf_list_text(odf_list: Any) -> str:
    """One line per paragraph, ``- `` before it and two spaces of indent per level of nesting."""
    lines: list[str] = []
    stack: list[tuple[Any, int]] = [(odf_list, -1)]
    while stack:
        node, depth = stack.pop()
        qname = node.qname
        if qname == _LIST:
            stack.extend((child, depth + 1) for child in reversed(list(_odf_elements(node))))
        elif qname in (_P, _H):
            text = _odf_inline_text(node)
            if text:
                lines.append("  " * depth + "- " + text)
        elif qname == _TABLE:
            lines.append(_odf_table_text(node))
        elif qname not in _ODF_SKIPPED:
            stack.extend((child, depth) for child in reversed(list(_odf_elements(node))))
    return "\n".join(lines)


def _odf_table_text(table: Any) -> str:
    rows: list[str] = []
    stack = list(reversed(list(_odf_elements(table))))
    while stack:
        node = stack.pop()
        if node.qname == _TABLE_ROW:
            # Covered cells (the rest of a merged cell) are a different element and stay out. A nested table
            # is read into its cell's text.
            cells = [
                one_line(_odf_inline_text(cell)) for cell in _odf_elements(node) if cell.qname == _TABLE_CELL
            ]
            if any(cells):
                rows.append(_CELL_SEPARATOR.join(cells))
        elif node.qname in _TABLE_ROW_CONTAINERS:
            stack.extend(reversed(list(_odf_elements(node))))
    return "\n".join(rows)


def _odp_blocks(shapes: list[Any], *, depth: int) -> Iterator[str]:
    for shape in sorted(shapes, key=_odp_position):
        if _odf_class(shape) in _ODF_FURNITURE_CLASSES:
            continue
        if shape.qname == _GROUP:
            if depth < _MAX_GROUP_DEPTH:
                yield from _odp_blocks(list(_odf_elements(shape)), depth=depth + 1)
        else:
            yield "\n".join(text for _, text in _odf_blocks(shape))


def _odp_position(shape: Any) -> tuple[float, float]:
    """Where the shape starts, top first; a group starts where its first member does."""
    found: list[tuple[float, float]] = []
    stack = [shape]
    while stack:
        node = stack.pop()
        top = _odf_length(node.getAttrNS(SVGNS, "y"))
        if top is not None:
            found.append((top, _odf_length(node.getAttrNS(SVGNS, "x")) or 0.0))
        elif node.qname == _GROUP:
            stack.extend(_odf_elements(node))
    return min(found, default=(math.inf, math.inf))


def _odf_length(value: str | None) -> float | None:
    """An ODF length ("2.5cm", "1in", "12pt") in millimetres; None when absent or unreadable."""
    match = _LENGTH.fullmatch(value or "")
    if match is None or match.group(2) not in _MILLIMETRES_PER_UNIT:
        return None
    return float(match.group(1)) * _MILLIMETRES_PER_UNIT[match.group(2)]


# --- EPUB -----------------------------------------------------------------------------------------

# Not read as text: code, styles, and ruby annotations (the pinyin or kana over Chinese and Japanese
# characters), which would otherwise be run into the words they annotate.
_EPUB_DROPPED_TAGS = ("script", "style", "noscript", "template", "rt", "rp")
# Anchored at the start, after an optional byte-order mark and XML declaration: one attempt, linear time.
_INTERNAL_DTD_SUBSET = re.compile(
    rb"((?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>)?\s*)<!DOCTYPE[^\[>]*\[.*?\]\s*>", re.DOTALL
)


@dataclass(frozen=True)
class _Chapter:
    """A spine document's text with its headings (offsets into ``text``) and its table-of-contents title."""

    text: str
    headings: tuple[Heading, ...]
    toc_title: str


def parse_epub(data: bytes) -> ParsedDocument:
    _refuse_entity_declarations(data, _label(FileType.EPUB), _is_epub_package_part)
    book = epub.read_epub(io.BytesIO(data))
    toc_titles = _epub_toc_titles(book.toc)
    chapters: list[_Chapter] = []
    for idref, _linear in book.spine:
        item = book.get_item_with_id(idref)
        # The navigation document repeats the table of contents; images and styles have no text.
        if not isinstance(item, epub.EpubHtml) or isinstance(item, epub.EpubNav):
            continue
        chapters.append(_epub_chapter(item.content, toc_titles.get(item.file_name, "")))
    # A chapter without a heading of its own gets its table-of-contents title, at the level the book's
    # chapters are headed with, so that it does not nest inside the chapter before it.
    toc_level = min((heading.level for chapter in chapters for heading in chapter.headings), default=1)
    builder = DocumentBuilder(FileType.EPUB)
    for chapter in chapters:
        _write_chapter(builder, chapter, toc_level=toc_level)
    builder.metadata.extend(
        ("Author", one_line(name)) for name, _ in book.get_metadata("DC", "creator") if name
    )
    return builder.build(book.title or "")


def _is_epub_package_part(name: str) -> bool:
    # What EbookLib reads with its XML parser: the container, the package document, the NCX table of contents.
    # Not chapters (an HTML parser reads them, and old books declare &nbsp; and the like there) nor images (an
    # SVG from Illustrator declares entities of its own).
    return name == "META-INF/container.xml" or name.endswith((".opf", ".ncx"))


def _epub_toc_titles(toc: list[Any]) -> dict[str, str]:
    """The first table-of-contents title that points into each spine document, by its file name."""
    titles: dict[str, str] = {}
    stack: list[Any] = list(reversed(toc))
    while stack:
        entry = stack.pop()
        if isinstance(entry, tuple | list):
            stack.extend(reversed(entry))
        elif isinstance(entry, epub.Link | epub.Section) and entry.href and entry.title:
            file_name = unquote(str(entry.href).split("#", 1)[0])
            titles.setdefault(file_name, one_line(str(entry.title)))
    return titles


def _epub_chapter(content: bytes, toc_title: str) -> _Chapter:
    # The HTML upload's walker, so that a chapter reads as the same page uploaded as HTML would. Imported
    # here because ingest.parsing imports this module to dispatch to it.
    # Left in, a DOCTYPE's internal subset (where some old books declare &nbsp; and the like) would be read by
    # the HTML parser as text: "]>" at the top of the chapter.
    prolog = _INTERNAL_DTD_SUBSET.match(content)
    if prolog is not None:
        content = prolog.group(1) + content[prolog.end() :]
    # XHTML read by lxml's HTML parser on purpose: it knows HTML's named entities (&nbsp; is common in
    # chapters and undefined in XML), ignores entity declarations, and reads broken markup the way readers do.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(content, "lxml")
    for tag in soup.find_all(_EPUB_DROPPED_TAGS):
        if not tag.decomposed:
            tag.decompose()
    text_builder = TextBuilder()
    walk_html(soup.body or soup, text_builder)
    return _Chapter(text_builder.text(), tuple(text_builder.headings), toc_title)


def _write_chapter(builder: DocumentBuilder, chapter: _Chapter, *, toc_level: int) -> None:
    titles = {heading.title for heading in chapter.headings}
    opens_with_heading = bool(chapter.headings) and chapter.headings[0].start == 0
    if chapter.toc_title and not opens_with_heading and chapter.toc_title not in titles:
        builder.heading(toc_level, chapter.toc_title)
    cursor = 0
    for heading in chapter.headings:
        builder.block(chapter.text[cursor : heading.start])
        builder.heading(heading.level, heading.title)
        cursor = heading.start + len(heading.title)
    builder.block(chapter.text[cursor:])
