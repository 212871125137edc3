"""Turn an upload's bytes into the one text that chunks and citations are measured against.

Pure and in-process: ``ingest.parse_limits`` runs this in a child process with resource limits, because the
parser libraries can be made to spin or allocate without bound by a hostile or broken file. Every failure a
user can act on is a ``DocumentParseError`` with a short message; library exceptions never leak out as
tracebacks.
"""

from __future__ import annotations

import codecs
import contextlib
import importlib
import io
import logging
import re
from collections.abc import Callable
from typing import Any

import charset_normalizer
import docx
from bs4 import BeautifulSoup
from bs4.element import NavigableString, PageElement, PreformattedString, Tag
from docx.document import Document as DocxDocument
from docx.table import Table, _Cell
from docx.text.paragraph import Paragraph

from app.rag.errors import DocumentParseError
from app.rag.filetypes import FORMAT_OF, SNIFF_BYTES, sniff_unicode_encoding
from app.rag.types import FileType, Heading, ParsedDocument
from ingest.page_progress import PageProgress, reporting_pages

logger = logging.getLogger(__name__)


_UNDETECTED_ENCODING = (
    "the text encoding of the file could not be detected; save the file as UTF-8 and upload it again"
)

_MAX_TITLE_CHARS = 200
_MAX_FIRST_LINE_TITLE = 80
_MAX_REASON_CHARS = 160

# NUL breaks PostgreSQL text columns; lone surrogates (from broken PDF font maps) cannot be encoded as UTF-8.
_UNSAFE_CHARS = re.compile("[\x00\ud800-\udfff]")
_WHITESPACE_RUN = re.compile(r"\s+")

# --- Chinese legacy encodings ---------------------------------------------------------------------
#
# charset-normalizer reads short GBK and Big5 texts as cp949, johab, UTF-16 or the other Chinese codec
# (measured: '你好' in GBK -> big5 '斕疑', '北京欢迎你' in GBK -> cp949, '這是繁體字' in Big5 -> cp949).
# We therefore also decode with these codecs and keep the reading with the most commonly used characters.
# cp950 is Windows' Big5 and decodes what plain Big5 lacks (€, 碁, 銹, 裏, box drawing).
_CHINESE_CODECS = ("gb18030", "big5", "cp950")
_CHINESE_CODEC_NAMES = frozenset(
    codecs.lookup(name).name for name in ("gb2312", "gbk", "gb18030", "big5", "big5hkscs", "cp950", "hz")
)
# The 600 most frequent characters of jieba's dictionary (word frequencies summed per character), then the
# traditional forms of those whose traditional form differs. A correct reading of Chinese text has most of its
# characters in this set (about three in four); a wrong reading scatters over ~20,000 codepoints and hits it
# about one time in fifteen.
_COMMON_SIMPLIFIED = (
    "一是人了不在有大中国和为这上他个地年来我会以到时要出的生学说道民家子也成行下们于后就发自之对得主长可"
    "过天作分方用多你着部能市等业全里工公经本都而高政法面门动日进区事代那去心小同北定开产前其军还然起种所"
    "如现理机体表力好外与文当两实重新三么只山水关明从化平建又制南内西没此将员名手最东头者月间无安看见各城"
    "十相但已些正口通想度加第她合院物性战由位常点海意场武使次二向治因立数样身情入原问把路被并利石老教万知"
    "级量任江及应省资委务元美特期世湖回系比气汉总展电科金先声提品设或义王社很统处四首共马形己儿司太目基领"
    "队直计别女权话少流命至报米给打变果书清活几州华解议更称程今决张导术府才保交放管结师便走达族反再题色五"
    "京河接条规式县白它改风光运信受什组听布百济党指论强做取技黄神选记斯真却职号界件花类何眼兵传带空干农边"
    "据集联古广完质阳难增历史专官每住商即步认车台林必死游举线言皇土团收考求德叫近备研争非具李众连调感转笑"
    "革该持始英克士尔让拉思根格造较际亲单朝红型价校约器字段周亚深候则功属积快图火千准究往极育装许参半令吃"
    "观鱼精办像帝八复影告远群包整构料随划算象容示投势热值夫网望源息语股铁断派速怎需片爱律纪支早况病境证编"
    "越局推满且列觉服双未居除乐企引标确织初青志率项飞球节察龙响药站施均消客失轻存低甚般击曾防请离落显罗营"
    "足素视护副食创余照兴占巴虽洲村费易试星木黑左宝置跟央识维采六底宫房音环案批切斗富乡另倒若按查故突责严"
)
_TRADITIONAL_FORMS = (
    "國為這個來會時學說們發髮對長過著業經門動進區開產軍還現當兩實關從內沒將員東頭間無見戰點場數樣問級應資"
    "務漢總電聲設義統處馬領隊計別權話報給變書華議稱決張導術結師達題條規縣風運組濟論強黃選記卻職號類傳帶農"
    "邊聯廣質陽難歷曆專認車舉線團備爭眾連調轉該爾讓較際親單紅約亞則屬積圖裝許參觀魚辦遠隨勢熱語鐵斷愛紀況"
    "證編滿覺雙樂標織項飛節龍響藥輕擊請顯羅營視護創興雖費試寶識維宮環鄉責嚴後裡裏乾幹隻臺係繫於幾製麼鬥餘"
    "萬與準價復複據劃佔採遊週網機體種氣兒黨極構確聽離颱"
)
_COMMON_HANZI = frozenset(_COMMON_SIMPLIFIED + _TRADITIONAL_FORMS)
# Over this set, correct readings of our samples (2 to 40 ideographs) measured 0.5-1.0 common ideographs and
# wrong ones (Chinese, Korean, Japanese read with the wrong codec) 0-0.38. Below this share we keep the
# detector's non-Chinese answer; between two Chinese readings ``_reading_score`` decides.
_MIN_COMMON_SHARE = 0.5
# Scoring is a Python loop; the start of a long text tells the readings apart as well as all of it.
_SCORED_CHARS = 100_000
# Valid multi-byte sequences per invalid one above which undecodable text is taken for damaged UTF-8.
_DAMAGED_UTF8_RATIO = 10

# --- Markdown -------------------------------------------------------------------------------------
_ATX_HEADING = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_SETEXT_UNDERLINE = re.compile(r" {0,3}(=+|-+)[ \t]*")
# A list item or quote: the lines after it continue it (lazily), so an underline there is a thematic break.
_CONTAINER_START = re.compile(r" {0,3}(?:[-+*](?:[ \t]|$)|\d{1,9}[.)](?:[ \t]|$)|>)")
# A thematic break or an HTML block line ends any paragraph without starting one.
_OTHER_BLOCK = re.compile(r" {0,3}(?:<|(?:[-*_][ \t]*){3,}$)")

# --- HTML -----------------------------------------------------------------------------------------
_DROPPED_TAGS = ("script", "style", "noscript", "template", "nav", "footer", "aside", "form", "svg", "iframe")
_DROPPED_ROLES = frozenset({"navigation", "banner", "contentinfo"})
_HEADING_TAGS = {f"h{level}": level for level in range(1, 7)}
# How many line breaks separate a block from its neighbours: 2 = a paragraph of its own, 1 = its own line.
_BLOCK_BREAKS = {
    **dict.fromkeys(("p", "section", "article", "main", "blockquote", "table", "ul", "ol", "dl"), 2),
    **dict.fromkeys(("figure", "hr", "address", "details", "fieldset", "header", "body", "html"), 2),
    **dict.fromkeys(("div", "li", "dt", "dd", "caption", "figcaption", "summary", "legend"), 1),
    **dict.fromkeys(("thead", "tbody", "tfoot", "option"), 1),
}
_HTML_SPACE = re.compile(r"[ \t\n\r\f]+")
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
# Labels whose WHATWG meaning is a superset of what Python's codec of the same name decodes.
_HTML_CHARSET_ALIASES = {
    **dict.fromkeys(("gb2312", "gbk", "x-gbk", "csgb2312", "euc-cn", "chinese", "cp936"), "gb18030"),
    **dict.fromkeys(("big5", "big5-hkscs", "x-x-big5", "cn-big5", "csbig5"), "cp950"),
    **dict.fromkeys(("iso-8859-1", "latin1", "latin-1", "us-ascii", "ascii", "windows-1252"), "cp1252"),
    # A <meta> that can be read at all was not written in UTF-16, whatever it claims.
    **dict.fromkeys(("utf-16", "utf-16le", "utf-16be"), "utf-8"),
}


def parse_document(data: bytes, file_type: FileType, *, on_pages: PageProgress | None = None) -> ParsedDocument:
    """Parse ``data`` as ``file_type``; raise ``DocumentParseError`` with a user-readable reason on failure.

    ``on_pages(done, total)`` hears from parsers that work page by page (OCR) as they go.

    ``MemoryError`` is let through on purpose: ``ingest.parse_limits`` reports it as the memory limit it is.
    """
    label = FORMAT_OF[file_type].label
    try:
        parse = parser_for(file_type)
        with reporting_pages(on_pages):
            document = parse(data)
    except (DocumentParseError, MemoryError):
        raise
    except RecursionError as exc:
        raise DocumentParseError(f"the {label} file is nested too deeply to read; it may be damaged") from exc
    # Parser libraries fail on broken input with whatever exception type the failing line happened to raise;
    # all of them mean the same thing to the user.
    except Exception as exc:
        logger.warning("could not parse a %s file: %s", label, type(exc).__name__)
        logger.debug("parser failure details", exc_info=True)
        reason = _short_reason(exc)
        raise DocumentParseError(f"the {label} file is damaged or not readable: {reason}") from exc
    if not document.text.strip():
        raise DocumentParseError(f"the {label} file contains no text")
    return document


def decode_text(data: bytes) -> str:
    """Decode a text file: byte-order mark or UTF-16, strict UTF-8, then detection tuned for Chinese.

    Newlines come back as ``\\n`` and NULs are removed. Raises ``DocumentParseError`` rather than returning
    text in which undecodable bytes were replaced by U+FFFD.
    """
    text = _decode_unicode(data)
    if text is None:
        text = _decode_legacy(data)
        if text is None or "\ufffd" in text:
            raise DocumentParseError(_UNDETECTED_ENCODING)
    return _normalize_newlines(text.replace("\x00", ""))


# --- text and Markdown ----------------------------------------------------------------------------


def _parse_text(data: bytes) -> ParsedDocument:
    text = decode_text(data)
    headings = markdown_headings(text, markdown=False)
    return ParsedDocument(text, FileType.TEXT, title_from_text(text, headings, markdown=False), headings)


def _parse_code(data: bytes) -> ParsedDocument:
    # No headings: a "# comment" in code or a config file is not a title, and the chunker cuts at line ends.
    return ParsedDocument(decode_text(data), FileType.CODE)


def _parse_markdown(data: bytes) -> ParsedDocument:
    # The source itself is the document text: offsets into it are what citations point back to.
    text = decode_text(data)
    headings = markdown_headings(text, markdown=True)
    return ParsedDocument(text, FileType.MARKDOWN, title_from_text(text, headings, markdown=True), headings)


def _parse_rst(data: bytes) -> ParsedDocument:
    # As with Markdown, the source is the document text (code blocks and directives' text kept as written);
    # docutils finds the sections, whatever adornment characters the file uses for which level.
    text = decode_text(data)
    headings = _rst_headings(text)
    title = headings[0].title if headings and headings[0].level == 1 else title_from_text(text, (), markdown=False)
    return ParsedDocument(text, FileType.RESTRUCTUREDTEXT, _clean_title(title), headings)


# docutils as a reader of untrusted files: no `.. include::` or `.. raw::` (they read server files and pass
# HTML through), no messages anywhere, and never stop at an error (Sphinx's own directives and roles, such as
# `.. code-block::` and `:ref:`, are unknown to plain docutils; their text stays in the source).
_RST_SETTINGS = {
    "file_insertion_enabled": False,
    "raw_enabled": False,
    "report_level": 5,
    "halt_level": 5,
    "doctitle_xform": False,
    "sectsubtitle_xform": False,
}


def _rst_headings(text: str) -> tuple[Heading, ...]:
    from docutils import nodes
    from docutils.core import publish_doctree

    tree = publish_doctree(text, settings_overrides={**_RST_SETTINGS, "warning_stream": io.StringIO()})
    lines = text.split("\n")
    starts = line_offsets(lines)
    headings = []
    for title in tree.findall(nodes.title):
        section = title.parent
        if not isinstance(section, nodes.section) or title.line is None:
            continue
        level = sum(1 for ancestor in _ancestors(section) if isinstance(ancestor, nodes.section))
        words = title.astext().strip()
        # docutils gives the line of the underline (1-based): the title is the line above it.
        index = _title_line(lines, title.line - 2, words)
        if index is not None:
            headings.append(Heading(start=starts[index], level=level, title=words))
    return tuple(sorted(headings, key=lambda h: h.start))


def _ancestors(node: Any) -> list[Any]:
    found = []
    while node is not None:
        found.append(node)
        node = node.parent
    return found


def _title_line(lines: list[str], guess: int, words: str) -> int | None:
    """The line that holds the title: docutils' guess, or a line next to it (inline markup, overlines)."""
    first = words.split()[0] if words.split() else ""
    for index in (guess, guess - 1, guess + 1, guess - 2):
        if 0 <= index < len(lines) and first and first in lines[index]:
            return index
    return None


def markdown_headings(text: str, *, markdown: bool) -> tuple[Heading, ...]:
    """ATX headings outside fenced code; for Markdown proper also setext headings, after any front matter.

    Plain text gets only the ``#`` lines: an underline of dashes there is more often a rule than a heading.
    """
    headings: list[Heading] = []
    lines = text.split("\n")
    offsets = line_offsets(lines)
    index = front_matter_end(lines) if markdown else 0
    fence: tuple[str, int] | None = None  # the open fence's character and length
    paragraph: list[int] = []  # the lines a setext underline would turn into a heading
    in_container = False  # lazy continuation lines of a list item or quote cannot become setext headings
    while index < len(lines):
        line = lines[index]
        fence_match = _FENCE.fullmatch(line)
        if fence is not None:
            if fence_match and _closes_fence(fence, fence_match):
                fence = None
        elif fence_match and not (fence_match.group(1)[0] == "`" and "`" in fence_match.group(2)):
            fence = (fence_match.group(1)[0], len(fence_match.group(1)))
            paragraph, in_container = [], False
        elif not line.strip():
            paragraph, in_container = [], False
        elif atx := _ATX_HEADING.fullmatch(line):
            title = _collapse(atx.group(2) or "")
            if title:
                headings.append(Heading(offsets[index], len(atx.group(1)), title))
            paragraph, in_container = [], False
        elif markdown and paragraph and (underline := _SETEXT_UNDERLINE.fullmatch(line)):
            title = _collapse(" ".join(lines[i] for i in paragraph))
            level = 1 if underline.group(1)[0] == "=" else 2
            headings.append(Heading(offsets[paragraph[0]], level, title))
            paragraph = []
        elif in_container or _CONTAINER_START.match(line):
            paragraph, in_container = [], True
        elif _OTHER_BLOCK.match(line):
            paragraph = []
        elif paragraph or not line.startswith(("    ", "\t")):
            paragraph.append(index)
        index += 1
    return tuple(headings)


def _closes_fence(fence: tuple[str, int], match: re.Match[str]) -> bool:
    marker = match.group(1)
    return marker[0] == fence[0] and len(marker) >= fence[1] and not match.group(2).strip()


def front_matter_end(lines: list[str]) -> int:
    """Index of the first line after a YAML front matter block, or 0 when there is none."""
    if not lines or lines[0].rstrip() != "---":
        return 0
    for index in range(1, len(lines)):
        if lines[index].rstrip() in ("---", "..."):
            return index + 1
    return 0


def line_offsets(lines: list[str]) -> list[int]:
    offsets: list[int] = []
    position = 0
    for line in lines:
        offsets.append(position)
        position += len(line) + 1
    return offsets


def title_from_text(text: str, headings: tuple[Heading, ...], *, markdown: bool) -> str:
    if headings:
        return _clean_title(headings[0].title)
    lines = text.split("\n")
    for line in lines[front_matter_end(lines) if markdown else 0 :]:
        stripped = line.strip()
        if stripped:
            return _clean_title(stripped) if len(stripped) <= _MAX_FIRST_LINE_TITLE else ""
    return ""


# --- HTML -----------------------------------------------------------------------------------------


def _parse_html(data: bytes) -> ParsedDocument:
    soup = BeautifulSoup(_decode_html(data), "lxml")
    title_tag = soup.find("title")
    title = _collapse(title_tag.get_text()) if title_tag is not None else ""
    _drop_boilerplate(soup)
    root = _main_content(soup)
    builder = TextBuilder()
    walk_html(root, builder)
    text = builder.text()
    if not title:
        title = next((heading.title for heading in builder.headings if heading.level == 1), "")
    return ParsedDocument(text, FileType.HTML, _clean_title(title), tuple(builder.headings))


def _decode_html(data: bytes) -> str:
    """Decode by BOM, then the document's own ``<meta charset>``, then detection."""
    sample = data[:SNIFF_BYTES]
    if sniff_unicode_encoding(sample) is None:
        declared = _META_CHARSET.search(sample)
        if declared is not None:
            label = declared.group(1).decode("ascii").lower()
            try:
                text = data.decode(_HTML_CHARSET_ALIASES.get(label, label))
            # An unknown label (LookupError) or a wrong one (UnicodeDecodeError): pages lie about charsets.
            except (LookupError, UnicodeDecodeError):
                logger.debug("declared HTML charset %r did not decode the page", label)
            else:
                return _normalize_newlines(text.replace("\x00", ""))
    return decode_text(data)


def _drop_boilerplate(soup: BeautifulSoup) -> None:
    doomed: list[Tag] = list(soup.find_all(_DROPPED_TAGS))
    doomed.extend(tag for tag in soup.find_all(role=True) if _role_tokens(tag) & _DROPPED_ROLES)
    # A <header> inside an article or section holds that article's own title; only the page banner goes.
    doomed.extend(
        tag for tag in soup.find_all("header") if tag.find_parent(["article", "main", "section"]) is None
    )
    for tag in doomed:
        if not tag.decomposed:
            tag.decompose()


def _role_tokens(tag: Tag) -> set[str]:
    role = tag.get("role")
    values = role if isinstance(role, list) else [role or ""]
    return {token.lower() for value in values for token in str(value).split()}


def _main_content(soup: BeautifulSoup) -> Tag:
    candidates: list[Tag] = list(soup.find_all(["main", "article"]))
    if candidates:
        return max(candidates, key=lambda tag: len(tag.get_text()))
    body = soup.find("body")
    return body if isinstance(body, Tag) else soup


class TextBuilder:
    """Accumulates extracted text, turning block boundaries into newlines and recording heading offsets.

    Breaks and spaces are held back until the next visible text, so the result never starts or ends with
    whitespace and offsets recorded along the way stay valid.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self._pending_breaks = 0
        self._pending_space = False
        self.headings: list[Heading] = []

    def text(self) -> str:
        return "".join(self._parts)

    def block_break(self, lines: int) -> None:
        self._pending_breaks = max(self._pending_breaks, lines)
        self._pending_space = False

    def line_break(self) -> None:
        # Two <br>s in a row are how many pages separate paragraphs.
        self._pending_breaks = min(2, self._pending_breaks + 1)
        self._pending_space = False

    def inline(self, raw: str) -> None:
        # &nbsp; is layout, not content; as a plain space it does not split words for search.
        collapsed = _HTML_SPACE.sub(" ", _UNSAFE_CHARS.sub("", raw).replace("\xa0", " "))
        content = collapsed.strip(" ")
        if collapsed.startswith(" "):
            self._pending_space = True
        if not content:
            return
        self._write_pending()
        self._write(content)
        self._pending_space = collapsed.endswith(" ")

    def heading(self, level: int, title: str) -> None:
        self.block_break(2)
        self._write_pending()
        self.headings.append(Heading(self._length, level, title))
        self._write(title)
        self.block_break(2)

    def preformatted(self, raw: str) -> None:
        text = _normalize_newlines(_UNSAFE_CHARS.sub("", raw))
        # Browsers drop the newline right after <pre>; trailing blank lines carry no content.
        text = text.removeprefix("\n").rstrip()
        if not text.strip():
            return
        self.block_break(2)
        self._write_pending()
        self._write(text)
        self.block_break(2)

    def _write_pending(self) -> None:
        if self._length and self._pending_breaks:
            self._write("\n" * self._pending_breaks)
        elif self._length and self._pending_space:
            self._write(" ")
        self._pending_breaks = 0
        self._pending_space = False

    def _write(self, text: str) -> None:
        self._parts.append(text)
        self._length += len(text)


def walk_html(root: Tag, builder: TextBuilder) -> None:
    # Iterative on purpose: hostile pages nest thousands of elements deep, beyond Python's recursion limit.
    stack: list[tuple[PageElement, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        if isinstance(node, NavigableString):
            # Comments, CDATA, doctypes and processing instructions are PreformattedStrings: not page text.
            if not isinstance(node, PreformattedString):
                builder.inline(str(node))
            continue
        if not isinstance(node, Tag):
            continue
        name = node.name
        if leaving:
            builder.block_break(_BLOCK_BREAKS.get(name, 0))
        elif name in _HEADING_TAGS:
            title = _collapse(node.get_text(" "))
            if title:
                builder.heading(_HEADING_TAGS[name], title)
        elif name == "pre":
            builder.preformatted(node.get_text())
        elif name == "br":
            builder.line_break()
        elif name == "tr":
            cells = [_collapse(cell.get_text(" ")) for cell in node.find_all(["td", "th"], recursive=False)]
            if any(cells):
                builder.block_break(1)
                # Empty cells stay, so that columns line up with the header row.
                builder.inline(" | ".join(cells))
                builder.block_break(1)
        else:
            if name in ("td", "th"):
                builder.inline(" ")
            breaks = _BLOCK_BREAKS.get(name, 0)
            if breaks:
                builder.block_break(breaks)
                stack.append((node, True))
            stack.extend((child, False) for child in reversed(node.contents))


# --- DOCX -----------------------------------------------------------------------------------------

_MAX_NESTED_TABLES = 3


def parse_docx(data: bytes) -> ParsedDocument:
    document = docx.Document(io.BytesIO(data))
    blocks: list[str] = []
    headings: list[Heading] = []
    offset = 0
    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            block = _clean_block(item.text)
            level = _heading_level(item)
        else:
            block = _clean_block(_table_text(item, depth=0))
            level = None
        if not block:
            continue
        if blocks:
            offset += 2  # the blank line joining blocks
        if level is not None:
            headings.append(Heading(offset, level, _collapse(block)))
        blocks.append(block)
        offset += len(block)
    title = _docx_title(document) or (headings[0].title if headings else "")
    return ParsedDocument("\n\n".join(blocks), FileType.DOCX, _clean_title(title), tuple(headings))


def _heading_level(paragraph: Paragraph) -> int | None:
    style = paragraph.style
    name = (style.name or "") if style is not None else ""
    if name.lower() == "title":
        return 1
    if not name.lower().startswith("heading"):
        return None
    number = re.search(r"\d+", name)
    return min(max(int(number.group()), 1), 6) if number else 1


def _table_text(table: Table, *, depth: int) -> str:
    rows: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            # A merged cell is returned once per grid column it spans; its text belongs in the row once.
            if previous is not None and cell._tc is previous._tc:
                continue
            previous = cell
            cells.append(_collapse(_cell_text(cell, depth=depth)))
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def _cell_text(cell: _Cell, *, depth: int) -> str:
    parts: list[str] = []
    for item in cell.iter_inner_content():
        if isinstance(item, Paragraph):
            parts.append(item.text)
        elif isinstance(item, Table) and depth < _MAX_NESTED_TABLES:
            parts.append(_table_text(item, depth=depth + 1))
    return " ".join(parts)


def _docx_title(document: DocxDocument) -> str:
    try:
        title = document.core_properties.title
    # A malformed docProps/core.xml should cost us the title, not the document.
    except Exception:
        return ""
    return title if isinstance(title, str) else ""


# --- decoding -------------------------------------------------------------------------------------


def _decode_unicode(data: bytes) -> str | None:
    """Decode as what the bytes reveal (BOM, UTF-16) or as UTF-8; ``None`` if neither applies strictly."""
    codec = sniff_unicode_encoding(data[:SNIFF_BYTES])
    if codec is not None:
        text = _decode_strict(data, codec)
        if text is None and codec == "utf-32":
            # FF FE 00 00 is also a UTF-16 LE BOM followed by U+0000.
            text = _decode_strict(data, "utf-16")
        if text is not None:
            return text
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The UTF-8 decoder gives this reason only for a sequence cut off by the end of the input: a file
        # truncated mid-character (a size limit, an interrupted copy) is UTF-8 without its last character.
        if exc.reason == "unexpected end of data":
            return _decode_strict(data[: exc.start], "utf-8")
    _refuse_damaged_utf8(data)
    return None


def _refuse_damaged_utf8(data: bytes) -> None:
    """Raise if ``data`` is UTF-8 with a few bad bytes: any detector would read all of it in a wrong encoding.

    Measured: 'Café au lait' x 20 in UTF-8 plus one Latin-1 'é' is read by charset-normalizer as hp_roman8
    ('Cafûˋ'). Legacy-encoded text forms valid UTF-8 sequences only by chance (about one GBK character in
    twelve), so valid sequences outnumbering invalid ones this much means UTF-8 that was damaged.
    """
    text = data.decode("utf-8", "replace")
    invalid = text.count("\ufffd")
    valid = len(text) - len(text.encode("ascii", "ignore")) - invalid
    if valid >= _DAMAGED_UTF8_RATIO * invalid:
        raise DocumentParseError(
            f"the file is UTF-8 text except for {invalid} invalid byte sequence(s), so its encoding is "
            "ambiguous; save the file as UTF-8 and upload it again"
        )


def _decode_strict(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        return None


def _decode_legacy(data: bytes) -> str | None:
    """Decode a non-Unicode file: charset-normalizer's guess, corrected for short Chinese texts."""
    detected: tuple[str, str] | None = None
    best = charset_normalizer.from_bytes(data).best()
    if best is not None and best.encoding:
        detected = (codecs.lookup(best.encoding).name, str(best))

    # The detector's reading goes first so that it wins ties.
    readings = [detected] if detected is not None else []
    for codec in _CHINESE_CODECS:
        text = _decode_strict(data, codec)
        if text is not None:
            readings.append((codecs.lookup(codec).name, text))
    chinese = [reading for reading in readings if reading[0] in _CHINESE_CODEC_NAMES]
    if not chinese:
        return detected[1] if detected is not None else None
    codec, text = max(chinese, key=lambda reading: _reading_score(reading[1]))

    if detected is not None and detected[0] not in _CHINESE_CODEC_NAMES:
        # The detector chose Korean, Japanese, Cyrillic, UTF-16...: overrule it only for text that reads as
        # Chinese, and better than the detector's own reading does.
        if _reads_as_chinese(text) and _reading_score(text) > _reading_score(detected[1]):
            logger.debug("decoding as %s instead of the detected %s", codec, detected[0])
            return text
        return detected[1]
    if detected is None and not _reads_as_chinese(text):
        return None
    return text


def _level_one_hanzi() -> frozenset[str]:
    """The frequently used characters as the encodings themselves rank them: GB2312 and Big5 level 1."""
    chars: set[str] = set()
    for lead in range(0xB0, 0xD8):
        for trail in range(0xA1, 0xFF):
            with contextlib.suppress(UnicodeDecodeError):
                chars.add(bytes((lead, trail)).decode("gb2312"))
    for code in range(0xA440, 0xC67F):
        with contextlib.suppress(UnicodeDecodeError):
            chars.add(code.to_bytes(2, "big").decode("big5"))
    return frozenset(char for char in chars if _is_ideograph(char))


def _reading_score(text: str) -> int:
    """Higher for a more plausible Chinese reading: common characters count twice, level-1 ones once.

    A wrong reading lands on rare characters, and Big5 read as GBK also on private-use codepoints, which
    cost a point each. This decides between readings even on two-character texts, where shares mean little.
    """
    score = 0
    for char in text[:_SCORED_CHARS]:
        if char in _COMMON_HANZI:
            score += 2
        elif char in _LEVEL_ONE_HANZI:
            score += 1
        elif "\ue000" <= char <= "\uf8ff":
            score -= 1
    return score


def _reads_as_chinese(text: str) -> bool:
    sample = text[:_SCORED_CHARS]
    ideographs = sum(1 for char in sample if _is_ideograph(char))
    common = sum(1 for char in sample if char in _COMMON_HANZI)
    return ideographs > 0 and common / ideographs >= _MIN_COMMON_SHARE


def _is_ideograph(char: str) -> bool:
    return "\u4e00" <= char <= "\u9fff" or "\u3400" <= char <= "\u4dbf" or "\uf900" <= char <= "\ufaff"


# --- shared ---------------------------------------------------------------------------------------


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _clean_block(text: str) -> str:
    return _normalize_newlines(_UNSAFE_CHARS.sub("", text)).strip()


def _collapse(text: str) -> str:
    return _WHITESPACE_RUN.sub(" ", text).strip()


def _clean_title(title: str) -> str:
    title = _collapse(_UNSAFE_CHARS.sub("", title))
    return title[:_MAX_TITLE_CHARS]


def _short_reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    reason = lines[0] if lines else type(exc).__name__
    return reason if len(reason) <= _MAX_REASON_CHARS else reason[: _MAX_REASON_CHARS - 1] + "…"


_PARSERS: dict[FileType, Callable[[bytes], ParsedDocument]] = {
    FileType.DOCX: parse_docx,
    FileType.HTML: _parse_html,
    FileType.MARKDOWN: _parse_markdown,
    FileType.RESTRUCTUREDTEXT: _parse_rst,
    FileType.TEXT: _parse_text,
    FileType.CODE: _parse_code,
}
# The other formats' parsers, as "module.function" in ingest.formats. They are imported by the parse child that
# needs one, not by the fork server every child is a copy of: their libraries (numpy under openpyxl and OCR,
# python-pptx, pdfium) would add ~150 MiB to the address space of every child, which the memory limit counts,
# and cost a text file's parse nothing.
_FORMAT_PARSERS: dict[FileType, str] = {
    FileType.PDF: "pdf.parse_pdf",
    FileType.MDX: "markup.parse_mdx",
    FileType.ASCIIDOC: "markup.parse_asciidoc",
    FileType.ORG: "markup.parse_org",
    FileType.LATEX: "markup.parse_latex",
    FileType.CSV: "tables.parse_csv",
    FileType.TSV: "tables.parse_tsv",
    FileType.XLSX: "tables.parse_xlsx",
    FileType.ODS: "tables.parse_ods",
    FileType.XLS: "tables.parse_xls",
    FileType.JSON: "structured.parse_json",
    FileType.JSONL: "structured.parse_jsonl",
    FileType.YAML: "structured.parse_yaml",
    FileType.XML: "structured.parse_xml",
    FileType.PPTX: "office.parse_pptx",
    FileType.ODP: "office.parse_odp",
    FileType.ODT: "office.parse_odt",
    FileType.EPUB: "office.parse_epub",
    FileType.EML: "mail.parse_eml",
    FileType.MSG: "mail.parse_msg",
    FileType.IMAGE: "images.parse_image",
    FileType.DOC: "legacy.parse_doc",
    FileType.PPT: "legacy.parse_ppt",
}


def parser_for(file_type: FileType) -> Callable[[bytes], ParsedDocument]:
    """The function that parses ``file_type``, importing its module on first use."""
    own = _PARSERS.get(file_type)
    if own is not None:
        return own
    module, _, function = _FORMAT_PARSERS[file_type].rpartition(".")
    parse: Callable[[bytes], ParsedDocument] = getattr(importlib.import_module(f"ingest.formats.{module}"), function)
    return parse

_LEVEL_ONE_HANZI = _level_one_hanzi()
