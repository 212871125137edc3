"""PDF: the text layer as people read it, and OCR for pages that are only images.

pdfium (pypdfium2) gives every character of the text layer with its box, baseline, font size and rotation,
which pypdf does not (it has positions per text operator, without widths, so it cannot say where a line ends).
From those we rebuild lines and decide, between each two lines, whether the break is a wrap to undo, a line
break to keep or a paragraph break:

* a wrap is joined: nothing between CJK characters, one space between words, a hyphen at the end of the line
  removed when the word goes on in lower case;
* a line that ends short of its column's right edge (the next line's first word would have fit) was broken
  on purpose: a paragraph ends there if it ends a sentence, otherwise the line break stays;
* a larger gap than the line spacing, a change of font size, the next line starting an item (``1.``,
  ``（一）``, ``第三条``, a bullet) or, after a full line ending a sentence, an indented next line, start a
  paragraph.

Running headers and footers (the same line, digits aside, at the same height at the top or bottom of most of
the pages it runs through) and bare page numbers are dropped. Headings come from the outline (bookmarks) when its titles can be found in the text, else
from fonts clearly larger (or bold at the body size) than the body text. A page with (almost) no text layer
that is mostly covered by images is rendered and read by ``ingest.ocr``; pages with a text layer never are.
Pages are separate blocks unless a sentence runs on from a full last line onto the next page.

pdfium is not thread-safe: parse in one thread per process (``ingest.parse_limits`` parses in a child).
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import logging
import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL.Image import Image

from app.rag.errors import DocumentParseError
from app.rag.types import FileType, ParsedDocument
from ingest import ocr
from ingest.formats.builder import DocumentBuilder
from ingest.page_progress import report_pages

logger = logging.getLogger(__name__)

_NO_PAGES = "the PDF file has no pages, so it contains no text"

# --- OCR ------------------------------------------------------------------------------------------
# A page with fewer visible characters than this (running headers and page numbers not counted) has no text
# layer worth the name: a scan, perhaps with a page number or a scanner's stamp as text.
_MIN_TEXT_LAYER_CHARS = 10
# ... and it is read by OCR only when images cover this share of it: a blank page or a page of vector
# drawings has nothing for OCR to read. Scans cover the whole page; a figure with a short caption does not.
_MIN_SCANNED_SHARE = 0.3
# Pages with more characters than this cannot fall under the limit above once headers are gone, so their
# images are not inspected.
_MAX_CHARS_TO_INSPECT_IMAGES = 200
# A hostile page can hold millions of image objects; a scan is one or a few.
_MAX_IMAGES_INSPECTED = 1000
# 200 dpi reads body text reliably. Pages are never rendered longer than the OCR engine reads them
# (``ocr.MAX_SIDE``), which also keeps a poster-sized page from taking gigabytes.
_OCR_DPI = 200

# --- headers, footers, page numbers ---------------------------------------------------------------
# Running headers and footers are in the top and bottom rows of lines of a page...
_MARGIN_ROWS = 2
# ... and repeat, digits aside and at the same height, at least this many times, on this share of the pages
# from the first to the last page they are on (a book's headers name the chapter; they change with it), or
# of the odd or the even pages there (books alternate the chapter's and the section's title).
_MIN_RUNNING_PAGES = 3
_MIN_RUNNING_SHARE = 0.6
# A bare page number is dropped only this close to the top or bottom edge (share of the page height).
_PAGE_NUMBER_BAND = 0.15
_PAGE_NUMBER = re.compile(
    r"[-–—~·•\[(（\s]*\d{1,4}[-–—~·•\])）\s]*"
    r"|第\s*\d{1,4}\s*页(?:\s*[,，/]?\s*共\s*\d{1,4}\s*页)?"
    r"|共\s*\d{1,4}\s*页\s*[,，]?\s*第\s*\d{1,4}\s*页"
    r"|(?:page|p\.)\s*\d{1,4}(?:\s*(?:of|/)\s*\d{1,4})?"
    r"|\d{1,4}\s*/\s*\d{1,4}"
    r"|(?=[ivxlcdm])m{0,3}(?:cm|cd|d?c{0,3})(?:xc|xl|l?x{0,3})(?:ix|iv|v?i{0,3})",
    re.IGNORECASE,
)
_DIGITS = re.compile(r"\d+")

# --- lines and paragraphs -------------------------------------------------------------------------
# Characters whose baselines differ by less than this share of the font size are on one line (sub- and
# superscripts included).
_SAME_LINE = 0.5
# Characters not within this many degrees of a quarter turn are diagonal watermarks, not text to read.
_MAX_SKEW_DEGREES = 3.0
# Font sizes within this ratio are the same size (rounding, a bold face's metrics).
_SIZE_TOLERANCE = 0.08
# A gap between lines this many times the usual line spacing separates paragraphs.
_PARAGRAPH_GAP = 1.4
# Lines whose left edges are within this many em belong to one column (first-line and hanging indents).
_COLUMN_REACH_EM = 3
# A line counts as full unless the next line's first word, and a space, would have fit after it.
_SPACE_EM = 0.3
# Pieces of one line this far apart are separate cells or tab stops.
_CELL_GAP_EM = 0.8
# A next line starting this far right of its column's left edge is indented.
_INDENT_EM = 0.8
_ITEM_START = re.compile(
    r"[•·●○◆◇■□▪▫►▶➢✓✔※]"
    r"|[-–—*+]\s"
    r"|\(?\d{1,3}[.)．]\s"
    r"|\d{1,3}[、．]"
    r"|[（(]\s*(?:[一二三四五六七八九十]{1,3}|\d{1,3}|[a-zA-Z])\s*[)）]"
    r"|[一二三四五六七八九十]{1,3}[、．]"
    r"|[①-⑳]"
    r"|第[一二三四五六七八九十百零〇\d]{1,5}[章节條条款部篇编]"
    r"|[a-zA-Z][.)]\s"
    r"|(?:chapter|section|article|part)\s+[\dIVXivx]+\b",
    re.IGNORECASE,
)
# A table of contents' entry: dot leaders and a page number. Never joined with the next line.
_CONTENTS_ENTRY = re.compile(r"(?:[.．·…]\s?){3,}\s*\d{1,4}$")
# A line ending like this ends a sentence (or, with a colon, introduces what follows).
_SENTENCE_END = re.compile(r"[。！？!?.…；;:：][”’\"'）)」』】》]*$")
_HYPHENS = frozenset("-\u2010\u00ad")
# pdfium reports a hyphen it recognises at the end of a line as one of these, without the line break.
_PDFIUM_HYPHEN_CODES = frozenset({0x02, 0xFFFE})
# Punctuation that may not start a line in CJK typesetting: it travels with the character before it...
_CJK_CLOSING = frozenset("，。、；：？！）」』】》〉”’…—·,.;:?!)")
# ... and punctuation that may not end one: it travels with the character after it.
_OPENING = frozenset("“‘（《「『【〈([{\"'")
# Quotes, ellipses and dashes both Chinese and English use.
_SHARED_PUNCTUATION = "“”‘’\"'…—–"

# --- headings -------------------------------------------------------------------------------------
# A font this much larger than the body text's is a heading's.
_HEADING_SIZE_RATIO = 1.15
_MAX_HEADING_LINES = 3
_MAX_HEADING_CHARS = 120
_MIN_HEADING_CHARS = 2
# Below this share of the characters in the body size, "larger than the body" means nothing.
_MIN_BODY_SHARE = 0.4
# A style with more characters than this share of the body's is text set large, not headings.
_MAX_HEADING_STYLE_SHARE = 0.3
# A heading does not end like a sentence or a clause.
_NOT_HEADING_END = re.compile(r"(?:[。，,；;：:]|(?<=[^\W\d_])\.)$")
_BOLD_FONT_NAME = re.compile(r"bold|black|heavy|semibold|demibold", re.IGNORECASE)
_BOLD_WEIGHT = 600
_FORCE_BOLD_FLAG = 1 << 18
# The outline gives the headings when at least this share of its entries is found in the text.
_MIN_OUTLINE_FOUND = 0.5
_MAX_OUTLINE_ENTRIES = 5000
_MAX_OUTLINE_DEPTH = 6
_MAX_OUTLINE_TITLE_LINES = 3
# Outline entries often leave out the number the heading has in the text ("Naming" for "2.2 Naming").
_SECTION_NUMBER = re.compile(
    r"(?:\d{1,3}[.．]?)+|[a-z](?:[.．]\d{1,3})*[.．]?|(?:appendix|chapter|section)[a-z\d]{1,3}[.:]?"
    r"|第[一二三四五六七八九十百零〇\d]{1,5}[章节篇部条]|[一二三四五六七八九十]{1,3}[、．.]|[（(][一二三四五六七八九十\d]{1,3}[)）]"
)
_MAX_SECTION_NUMBER_CHARS = 12


class _Glyph(NamedTuple):
    """One character, in the frame of its own quarter turn: left to right, baselines rising upwards."""

    char: str
    char_index: int  # in pdfium's text page: for font lookups
    left: float
    right: float
    baseline: float
    size: float
    turn: int  # quarter turns counter-clockwise


@dataclass
class _Line:
    text: str
    left: float
    right: float
    baseline: float
    size: float
    turn: int
    # The width of the first word (a CJK character with the punctuation that travels with it): whether it would
    # have fit at the end of the line above.
    lead_width: float
    bold: bool
    # Set when the outline names this line (with the lines of the same entry) as a heading.
    outline_entry: int = -1
    outline_level: int = 0


@dataclass
class _Page:
    number: int  # 1-based
    lines: list[_Line]
    # The page's lower and upper edge, in the frame of its most common quarter turn.
    bottom: float
    top: float
    turn: int
    scanned: bool  # mostly covered by images

    @property
    def visible_chars(self) -> int:
        return sum(len(line.text.replace(" ", "")) for line in self.lines)


@dataclass
class _Paragraph:
    lines: list[_Line] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    level: int = 0

    @property
    def text(self) -> str:
        return "".join(self.parts)


class _Break(enum.Enum):
    JOIN = "join"  # a wrap: the lines are one line of text
    SPACE = "space"  # pieces of one line set apart (table cells, tab stops): a space even between ideographs
    LINE = "line"  # a line break the author made
    PARAGRAPH = "paragraph"


def parse_pdf(data: bytes) -> ParsedDocument:
    """The document's text as people read it; ``ocr_pages`` lists the pages read by OCR."""
    document = _open(data)
    try:
        title = _metadata_title(document)
        pages = [_read_page(document, index) for index in range(len(document))]
        if not pages:
            raise DocumentParseError(_NO_PAGES)
        _drop_running_lines(pages)
        outline_found = _mark_outline_headings(document, pages)
        scanned = [
            page.number for page in pages if page.visible_chars < _MIN_TEXT_LAYER_CHARS and page.scanned
        ]
        ocr_texts = dict(_read_scans(document, scanned))
    finally:
        document.close()
    for number in scanned:
        # A page that goes to OCR is read from its image only: what little text layer it has is on it too.
        pages[number - 1].lines = []
    paragraphs = _paragraphs(pages, ocr_texts)
    if not outline_found:
        _mark_font_headings(paragraphs)
    logger.debug(
        "PDF of %d pages, %d read by OCR, headings from the %s",
        len(pages),
        len(scanned),
        "outline" if outline_found else "fonts",
    )
    builder = DocumentBuilder(FileType.PDF)
    for paragraph in paragraphs:
        if paragraph.level:
            builder.heading(paragraph.level, paragraph.text)
        else:
            builder.block(paragraph.text)
    parsed = builder.build(title)
    if not parsed.text:
        raise DocumentParseError(_no_text_reason(scanned))
    ocr_pages = tuple(number for number in scanned if ocr_texts[number])
    return replace(parsed, ocr_pages=ocr_pages)


_EMPTY_PAGE_TREE = re.compile(rb"/Type\s*/Pages\b(?:(?!>>).){0,200}?/Count\s+0\b", re.DOTALL)


def _open(data: bytes) -> pdfium.PdfDocument:
    # pdfium opens files encrypted only against printing or copying (an empty user password) by itself.
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        # pdfium's last error is per process and a failed load does not always set it: after an encrypted file,
        # a PDF of no pages also reads "password". Only a file with an /Encrypt entry can need one.
        if code == pdfium_c.FPDF_ERR_PASSWORD and b"/Encrypt" in data:
            raise DocumentParseError(
                "the PDF file is encrypted with a password; remove the password protection and upload it again"
            ) from exc
        # pdfium refuses a PDF of no pages without setting an error of its own, so the code says nothing here.
        if _EMPTY_PAGE_TREE.search(data):
            raise DocumentParseError(_NO_PAGES) from exc
        raise


def _metadata_title(document: pdfium.PdfDocument) -> str:
    try:
        title = document.get_metadata_value("Title")
    # A broken /Info dictionary should cost us the title, not the document.
    except Exception:
        return ""
    return title if isinstance(title, str) else ""


def _no_text_reason(scanned: list[int]) -> str:
    if scanned:
        return "the PDF file has no text layer, and OCR found no text in its page images"
    return "the PDF file contains no text: its pages are blank or drawn as shapes rather than text"


# --- reading pages --------------------------------------------------------------------------------


def _read_page(document: pdfium.PdfDocument, index: int) -> _Page:
    page = document[index]
    try:
        width, height = page.get_size()
        textpage = page.get_textpage()
        try:
            glyphs = _read_glyphs(textpage)
            lines = _assemble_lines(glyphs, textpage)
        finally:
            textpage.close()
        turn = _dominant_turn(glyphs)
        _, bottom, _, top = _turned_box((0.0, 0.0, width, height), turn)
        chars = sum(1 for glyph in glyphs if not glyph.char.isspace())
        scanned = (
            chars <= _MAX_CHARS_TO_INSPECT_IMAGES and _image_share(page, width * height) >= _MIN_SCANNED_SHARE
        )
    finally:
        page.close()
    return _Page(index + 1, lines, bottom, top, turn, scanned)


def _read_glyphs(textpage: pdfium.PdfTextPage) -> list[_Glyph]:
    handle = textpage.raw
    box = pdfium_c.FS_RECTF()
    matrix = pdfium_c.FS_MATRIX()
    origin_x, origin_y = ctypes.c_double(), ctypes.c_double()
    glyphs: list[_Glyph] = []
    # Consecutive characters nearly always share their rotation: compute it once per run.
    rotation, turn = (1.0, 0.0), 0
    for index in range(pdfium_c.FPDFText_CountChars(handle)):
        code = pdfium_c.FPDFText_GetUnicode(handle, index)
        if code in _PDFIUM_HYPHEN_CODES and pdfium_c.FPDFText_IsHyphen(handle, index):
            char = "-"
        elif code == 0x0A:
            glyphs.append(_Glyph("\n", index, 0.0, 0.0, 0.0, 0.0, 0))
            continue
        elif code < 0x20 or 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
            # Control characters (our own "\r" of pdfium's "\r\n", broken font maps) and lone surrogates.
            continue
        else:
            char = chr(code)
        if char.isspace():
            glyphs.append(_Glyph(" ", index, 0.0, 0.0, 0.0, 0.0, 0))
            continue
        pdfium_c.FPDFText_GetLooseCharBox(handle, index, box)
        pdfium_c.FPDFText_GetCharOrigin(handle, index, origin_x, origin_y)
        pdfium_c.FPDFText_GetMatrix(handle, index, matrix)
        if (matrix.a, matrix.b) != rotation:
            rotation = (matrix.a, matrix.b)
            turn = _quarter_turns(matrix.a, matrix.b)
        if turn < 0:
            continue
        # The matrix holds the scaling applied to the font size: what is on the page is their product.
        size = pdfium_c.FPDFText_GetFontSize(handle, index) * math.hypot(matrix.c, matrix.d)
        if turn:
            left, _, right, _ = _turned_box((box.left, box.bottom, box.right, box.top), turn)
            baseline = _turned_point(origin_x.value, origin_y.value, turn)[1]
        else:
            left, right, baseline = box.left, box.right, origin_y.value
        glyphs.append(_Glyph(char, index, left, right, baseline, size, turn))
    return glyphs


def _quarter_turns(a: float, b: float) -> int:
    """Quarter turns counter-clockwise of a character's matrix; -1 for text set at a slant (a watermark)."""
    degrees = math.degrees(math.atan2(b, a)) % 360
    turns = round(degrees / 90)
    if abs(degrees - turns * 90) > _MAX_SKEW_DEGREES:
        return -1
    return turns % 4


def _turned_point(x: float, y: float, turn: int) -> tuple[float, float]:
    """The point in the frame where text turned by ``turn`` quarter turns reads left to right."""
    for _ in range(turn):
        x, y = y, -x
    return x, y


def _turned_box(box: tuple[float, float, float, float], turn: int) -> tuple[float, float, float, float]:
    left, bottom, right, top = box
    x0, y0 = _turned_point(left, bottom, turn)
    x1, y1 = _turned_point(right, top, turn)
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def _dominant_turn(glyphs: list[_Glyph]) -> int:
    turns = Counter(glyph.turn for glyph in glyphs if glyph.size)
    return turns.most_common(1)[0][0] if turns else 0


def _image_share(page: pdfium.PdfPage, area: float) -> float:
    if area <= 0:
        return 0.0
    covered = 0.0
    images = page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=3)
    for image in itertools.islice(images, _MAX_IMAGES_INSPECTED):
        left, bottom, right, top = image.get_bounds()
        covered += max(0.0, right - left) * max(0.0, top - bottom)
        if covered >= area:
            break
    return min(covered / area, 1.0)


def _assemble_lines(glyphs: list[_Glyph], textpage: pdfium.PdfTextPage) -> list[_Line]:
    lines: list[_Line] = []
    current: list[_Glyph] = []
    for glyph in glyphs:
        if glyph.char == "\n":
            lines.extend(_make_line(current, textpage))
            current = []
        elif glyph.char == " ":
            if current:
                current.append(glyph)
        else:
            # A line starts with an inked glyph: spaces are only kept after one.
            if current and (
                glyph.turn != current[0].turn
                or abs(glyph.baseline - current[0].baseline) > _SAME_LINE * max(glyph.size, current[0].size)
            ):
                lines.extend(_make_line(current, textpage))
                current = []
            current.append(glyph)
    lines.extend(_make_line(current, textpage))
    return lines


def _make_line(glyphs: list[_Glyph], textpage: pdfium.PdfTextPage) -> Iterator[_Line]:
    inked = [glyph for glyph in glyphs if glyph.size]
    if not inked:
        return
    text = re.sub(" +", " ", "".join(glyph.char for glyph in glyphs)).strip()
    sizes = Counter(round(glyph.size * 2) / 2 for glyph in inked)
    yield _Line(
        text=text,
        left=min(glyph.left for glyph in inked),
        right=max(glyph.right for glyph in inked),
        baseline=inked[0].baseline,
        size=sizes.most_common(1)[0][0],
        turn=inked[0].turn,
        lead_width=_lead_width(inked),
        bold=_is_bold(textpage, inked[0].char_index) and _is_bold(textpage, inked[-1].char_index),
    )


def _lead_width(inked: list[_Glyph]) -> float:
    end = 0
    while end < len(inked) - 1 and inked[end].char in _OPENING:
        end += 1
    first = inked[end]
    end += 1
    if _is_cjk(first.char):
        while end < len(inked) and inked[end].char in _CJK_CLOSING:
            end += 1
    else:
        # Spaces are not inked glyphs: a word ends where the next glyph starts well after this one ends.
        while (
            end < len(inked)
            and not _is_cjk(inked[end].char)
            and inked[end].left - inked[end - 1].right < 0.15 * first.size
        ):
            end += 1
    return inked[end - 1].right - inked[0].left


def _is_bold(textpage: pdfium.PdfTextPage, index: int) -> bool:
    handle = textpage.raw
    if pdfium_c.FPDFText_GetFontWeight(handle, index) >= _BOLD_WEIGHT:
        return True
    flags = ctypes.c_int()
    name = ctypes.create_string_buffer(128)
    pdfium_c.FPDFText_GetFontInfo(handle, index, name, len(name), flags)
    return bool(flags.value & _FORCE_BOLD_FLAG) or bool(_BOLD_FONT_NAME.search(name.value.decode("latin-1")))


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        0x2E80 <= code <= 0x303F  # radicals, ideographic description, CJK punctuation
        or 0x3040 <= code <= 0x31FF  # kana, bopomofo
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xF900 <= code <= 0xFAFF
        or 0xFE30 <= code <= 0xFE4F
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
        or 0x20000 <= code <= 0x3FFFF
    )


# --- running headers, footers and page numbers ----------------------------------------------------


def _drop_running_lines(pages: list[_Page]) -> None:
    text_pages = [page for page in pages if page.lines]
    margins = {page.number: _margin_line_indexes(page) for page in text_pages}
    seen: dict[tuple[str, float, int], set[int]] = defaultdict(set)
    for page in text_pages:
        for index in margins[page.number]:
            seen[_running_key(page.lines[index])].add(page.number)
    numbers = [page.number for page in text_pages]
    running = {key for key, found in seen.items() if _repeats(found, numbers)}
    for page in text_pages:
        dropped = {
            index
            for index in margins[page.number]
            if _running_key(page.lines[index]) in running or _is_page_number(page.lines[index], page)
        }
        page.lines = [line for index, line in enumerate(page.lines) if index not in dropped]


def _margin_line_indexes(page: _Page) -> set[int]:
    """The lines of the top two and the bottom two rows (a header may be set in pieces: left, centre, right)."""
    upright = [index for index, line in enumerate(page.lines) if line.turn == page.turn]
    by_height = sorted(upright, key=lambda index: page.lines[index].baseline)
    chosen: set[int] = set()
    for ordered in (by_height, by_height[::-1]):
        rows, row_baseline = 0, math.nan
        for index in ordered:
            line = page.lines[index]
            if not abs(line.baseline - row_baseline) <= _SAME_LINE * line.size:
                rows, row_baseline = rows + 1, line.baseline
                if rows > _MARGIN_ROWS:
                    break
            chosen.add(index)
    return chosen


def _running_key(line: _Line) -> tuple[str, float, int]:
    # Headers and footers sit at the same height on every page; body text that repeats rarely does.
    return (
        _DIGITS.sub("#", line.text.replace(" ", "").casefold()),
        line.size,
        round(line.baseline / line.size),
    )


def _repeats(found: set[int], numbers: list[int]) -> bool:
    span = [number for number in numbers if min(found) <= number <= max(found)]
    even = [number for number in span if number % 2 == 0]
    odd = [number for number in span if number % 2]
    for pages in (span, even, odd):
        hits = len(found.intersection(pages))
        if hits >= _MIN_RUNNING_PAGES and hits >= _MIN_RUNNING_SHARE * len(pages):
            return True
    return False


def _is_page_number(line: _Line, page: _Page) -> bool:
    band = _PAGE_NUMBER_BAND * (page.top - page.bottom)
    in_band = line.baseline <= page.bottom + band or line.baseline >= page.top - band
    return in_band and _PAGE_NUMBER.fullmatch(line.text) is not None


# --- outline headings -----------------------------------------------------------------------------


def _mark_outline_headings(document: pdfium.PdfDocument, pages: list[_Page]) -> bool:
    """Mark the lines the outline's entries name; ``False`` (and nothing marked) if too few are found."""
    entries = list(_outline_entries(document, len(pages)))
    if not entries:
        return False
    marks: list[tuple[list[_Line], int]] = []
    taken: set[int] = set()
    squeezed: dict[int, list[str]] = {}
    for page_index, level, title in entries:
        lines = pages[page_index].lines
        if page_index not in squeezed:
            squeezed[page_index] = [_squeeze(line.text) for line in lines]
        found = _find_title(lines, squeezed[page_index], title, taken)
        if found is not None:
            marks.append((found, level))
            taken.update(id(line) for line in found)
    if len(marks) < _MIN_OUTLINE_FOUND * len(entries):
        return False
    for entry, (lines, level) in enumerate(marks):
        for line in lines:
            line.outline_entry = entry
            line.outline_level = level
    return True


def _outline_entries(document: pdfium.PdfDocument, page_count: int) -> Iterator[tuple[int, int, str]]:
    """(page index, level from 1, title) of each outline entry that points at a page."""
    bookmarks = document.get_toc(max_depth=_MAX_OUTLINE_DEPTH)
    for bookmark in itertools.islice(bookmarks, _MAX_OUTLINE_ENTRIES):
        dest = bookmark.get_dest()
        page_index = dest.get_index() if dest is not None else None
        title = _squeeze(bookmark.get_title() or "")
        if title and page_index is not None and 0 <= page_index < page_count:
            yield page_index, bookmark.level + 1, title


def _find_title(lines: list[_Line], squeezed: list[str], title: str, taken: set[int]) -> list[_Line] | None:
    """The first run of up to three lines, not yet taken, whose text is the title, perhaps after its number."""
    for start in range(len(lines)):
        text = ""
        for end in range(start, min(start + _MAX_OUTLINE_TITLE_LINES, len(lines))):
            if id(lines[end]) in taken:
                break
            text += squeezed[end]
            if text.endswith(title) and (text == title or _SECTION_NUMBER.fullmatch(text[: -len(title)])):
                return lines[start : end + 1]
            if len(text) > len(title) + _MAX_SECTION_NUMBER_CHARS:
                break
    return None


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text).casefold()


# --- paragraphs -----------------------------------------------------------------------------------


class _Layout:
    """What the whole document says about its lines: line spacing per font size, and where columns end."""

    def __init__(self, pages: list[_Page]) -> None:
        spacings: dict[tuple[int, float], list[float]] = defaultdict(list)
        # Per (turn, size, left edge in em): the lines' leftmost left, rightmost right and how many there are.
        self._columns: dict[tuple[int, float, int], tuple[float, float, int]] = {}
        for page in pages:
            for above, below in itertools.pairwise(page.lines):
                rise = above.baseline - below.baseline
                if above.turn == below.turn and _same_size(above, below) and 0.8 <= rise / above.size <= 3:
                    spacings[above.turn, above.size].append(rise)
            for line in page.lines:
                key = (line.turn, line.size, _em_slot(line))
                left, right, count = self._columns.get(key, (line.left, line.right, 0))
                self._columns[key] = (min(left, line.left), max(right, line.right), count + 1)
        self._spacing = {key: statistics.median(rises) for key, rises in spacings.items()}

    def spacing(self, line: _Line) -> float:
        return self._spacing.get((line.turn, line.size), 1.2 * line.size)

    def column(self, line: _Line) -> tuple[float, float, int]:
        """The left and right edges of the line's column, and how many lines (of any page) show them.

        Pages of one document share their margins: a column's right edge seen on a full page tells where the
        lines of a page with a few short lines would have wrapped.
        """
        slot = _em_slot(line)
        left, right, count = line.left, line.right, 0
        for nearby in range(slot - _COLUMN_REACH_EM, slot + _COLUMN_REACH_EM + 1):
            found = self._columns.get((line.turn, line.size, nearby))
            if found is not None:
                left, right, count = min(left, found[0]), max(right, found[1]), count + found[2]
        return left, right, count


def _em_slot(line: _Line) -> int:
    return math.floor(line.left / line.size)


def _paragraphs(pages: list[_Page], ocr_texts: dict[int, str]) -> list[_Paragraph]:
    layout = _Layout(pages)
    paragraphs: list[_Paragraph] = []
    previous: _Line | None = None
    for page in pages:
        if page.number in ocr_texts:
            paragraphs.append(_Paragraph(parts=[ocr_texts[page.number]]))
            previous = None
            continue
        for position, line in enumerate(page.lines):
            if previous is None:
                paragraphs.append(_Paragraph())
            else:
                decision = _break_between(previous, line, layout, same_page=position > 0)
                if decision is _Break.PARAGRAPH:
                    paragraphs.append(_Paragraph())
                elif decision is _Break.LINE:
                    paragraphs[-1].parts.append("\n")
                elif decision is _Break.SPACE:
                    paragraphs[-1].parts.append(" ")
            _append_line(paragraphs[-1], line)
            previous = line
    for paragraph in paragraphs:
        if paragraph.lines and paragraph.lines[0].outline_entry >= 0:
            paragraph.level = paragraph.lines[0].outline_level
    return [paragraph for paragraph in paragraphs if paragraph.text.strip()]


def _append_line(paragraph: _Paragraph, line: _Line) -> None:
    parts = paragraph.parts
    if paragraph.lines and parts[-1] not in ("\n", " "):
        before, after = parts[-1], line.text
        if before[-1] in _HYPHENS and len(before) > 1 and before[-2].isalpha() and after[0].isalpha():
            # A word hyphenated across lines goes on in lower case; "Jean-" + "Pierre" keeps its hyphen.
            if after[0].islower():
                parts[-1] = before[:-1]
        elif not _written_solid(before, after):
            parts.append(" ")
    parts.append(line.text)
    paragraph.lines.append(line)


def _written_solid(before: str, after: str) -> bool:
    """Whether text goes on from ``before`` to ``after`` with no space: Chinese and Japanese do, next to their
    own characters. Quotes and dashes at the break are shared with English, so the letters beyond them decide."""
    last = before.rstrip(_SHARED_PUNCTUATION)[-1:] or before[-1]
    first = after.lstrip(_SHARED_PUNCTUATION)[:1] or after[0]
    return _is_cjk(last) or _is_cjk(first)


def _break_between(above: _Line, below: _Line, layout: _Layout, *, same_page: bool) -> _Break:
    if above.outline_entry != below.outline_entry:
        return _Break.PARAGRAPH
    if above.outline_entry >= 0:
        return _Break.JOIN
    if above.turn != below.turn or not _same_size(above, below):
        return _Break.PARAGRAPH
    rise = above.baseline - below.baseline
    same_flow = same_page and rise > -_SAME_LINE * above.size
    if same_flow and abs(rise) <= _SAME_LINE * above.size:
        # Pieces of one line that pdfium reported apart.
        return _Break.SPACE if below.left - above.right > _CELL_GAP_EM * above.size else _Break.JOIN
    if same_flow and rise > _PARAGRAPH_GAP * layout.spacing(above):
        return _Break.PARAGRAPH
    if _CONTENTS_ENTRY.search(above.text):
        return _Break.LINE if same_flow else _Break.PARAGRAPH
    ends_sentence = _SENTENCE_END.search(above.text) is not None
    full = _is_full(above, below, layout)
    indented = below.left > layout.column(below)[0] + _INDENT_EM * below.size
    if not same_flow:
        # A new page or column goes on with the paragraph only when the sentence visibly runs on.
        runs_on = full and not ends_sentence and not indented and not _ITEM_START.match(below.text)
        return _Break.JOIN if runs_on else _Break.PARAGRAPH
    if _ITEM_START.match(below.text) and (ends_sentence or not full):
        return _Break.PARAGRAPH
    if not full:
        return _Break.PARAGRAPH if ends_sentence else _Break.LINE
    if ends_sentence and indented:
        return _Break.PARAGRAPH
    return _Break.JOIN


def _is_full(above: _Line, below: _Line, layout: _Layout) -> bool:
    """Whether the line above reaches so close to its column's right edge that the next word had to wrap."""
    _, right, count = layout.column(above)
    if count < 2:
        # A line alone in its column (a centred title, a one-line note) shows no edge to wrap at.
        return False
    space = 0.0 if _is_cjk(below.text[0]) else _SPACE_EM * below.size
    return right - above.right < below.lead_width + space


def _same_size(first: _Line, second: _Line) -> bool:
    return abs(first.size - second.size) <= _SIZE_TOLERANCE * max(first.size, second.size)


# --- headings from fonts --------------------------------------------------------------------------


def _mark_font_headings(paragraphs: list[_Paragraph]) -> None:
    """Paragraphs set clearly larger (or bold at the body size) than the body become headings, ranked by size."""
    sizes: Counter[float] = Counter()
    for paragraph in paragraphs:
        for line in paragraph.lines:
            sizes[line.size] += len(line.text)
    if not sizes:
        return
    body_size, body_chars = sizes.most_common(1)[0]
    if body_chars < _MIN_BODY_SHARE * sum(sizes.values()):
        return
    candidates: dict[float, list[_Paragraph]] = defaultdict(list)
    for paragraph in paragraphs:
        size = _heading_size(paragraph, body_size)
        if size is not None:
            candidates[size].append(paragraph)
    # A size used for much text is text set large, not headings.
    sizes_in_use = sorted(
        (
            size
            for size, found in candidates.items()
            if sum(len(p.text) for p in found) <= _MAX_HEADING_STYLE_SHARE * body_chars
        ),
        reverse=True,
    )
    level, level_size = 0, math.inf
    for size in sizes_in_use:
        if size < level_size * (1 - _SIZE_TOLERANCE):
            level, level_size = level + 1, size
        for paragraph in candidates[size]:
            paragraph.level = level


def _heading_size(paragraph: _Paragraph, body_size: float) -> float | None:
    """The font size that makes the paragraph a heading (the body size for a bold line), or ``None``."""
    lines = paragraph.lines
    text = paragraph.text.strip()
    if (
        not lines
        or len(lines) > _MAX_HEADING_LINES
        or not _MIN_HEADING_CHARS <= len(text) <= _MAX_HEADING_CHARS
    ):
        return None
    if (
        _NOT_HEADING_END.search(text)
        or _CONTENTS_ENTRY.search(text)
        or not any(char.isalpha() for char in text)
    ):
        return None
    size = lines[0].size
    if size >= _HEADING_SIZE_RATIO * body_size:
        return size
    if abs(size - body_size) <= _SIZE_TOLERANCE * body_size and len(lines) == 1 and lines[0].bold:
        return body_size
    return None


# --- OCR ------------------------------------------------------------------------------------------


def _read_scans(document: pdfium.PdfDocument, numbers: list[int]) -> Iterator[tuple[int, str]]:
    """The OCR text of each page in ``numbers``, reporting progress: OCR takes seconds a page."""
    for done, number in enumerate(numbers, start=1):
        text = ocr.recognize(_render(document, number - 1)).strip()
        report_pages(done, len(numbers))
        yield number, text


def _render(document: pdfium.PdfDocument, index: int) -> Image:
    page = document[index]
    try:
        width, height = page.get_size()
        # pdfium rounds the bitmap's sides up: one pixel short keeps the longer side within the bound.
        scale = min(_OCR_DPI / 72, (ocr.MAX_SIDE - 1) / max(width, height, 1.0))
        bitmap = page.render(scale=scale, grayscale=True, draw_annots=True)
        try:
            image: Image = bitmap.to_pil().copy()
            return image
        finally:
            bitmap.close()
    finally:
        page.close()
