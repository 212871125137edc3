"""PDF text as people read it: lines joined inside paragraphs, running headers gone, headings, OCR pages.

Every PDF is drawn here with reportlab, line by line, so each test states exactly where the lines break.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import pytest
from PIL import Image, ImageDraw, ImageFont
from pypdf import PdfReader, PdfWriter
from reportlab.lib.pagesizes import A4
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen.canvas import Canvas

from app.rag.errors import DocumentParseError
from app.rag.types import FileType, Heading, ParsedDocument
from ingest import ocr, parsing
from ingest.formats.pdf import parse_pdf
from ingest.page_progress import reporting_pages
from ingest.parsing import parse_document

# reportlab's built-in Adobe font for simplified Chinese: referenced, not embedded, and read back through
# its standard CMap.
SONG = "STSong-Light"
pdfmetrics.registerFont(UnicodeCIDFont(SONG))

Page = Callable[[Canvas], None]


def _pdf(*pages: Page, title: str | None = None, size: tuple[float, float] = A4) -> bytes:
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=size)
    if title:
        canvas.setTitle(title)
    for draw in pages:
        draw(canvas)
        canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def _paragraph(
    canvas: Canvas,
    lines: list[str],
    *,
    y: float,
    font: str = SONG,
    size: float = 11,
    leading: float = 17,
    justify_to: float | None = None,
    last_line_full: bool = False,
) -> float:
    """Draw the lines from ``y`` down, all but the last (unless ``last_line_full``) stretched to ``justify_to``
    points, as Word sets Chinese. Returns the baseline the next line would have."""
    canvas.setFont(font, size)
    for number, line in enumerate(lines):
        natural = pdfmetrics.stringWidth(line, font, size)
        spacing = 0.0
        if justify_to is not None and (last_line_full or number < len(lines) - 1):
            assert natural <= justify_to, f"{line!r} is wider than the column"
            spacing = (justify_to - natural) / (len(line) - 1)
        canvas.drawString(72, y, line, charSpace=spacing)
        y -= leading
    return y


def _wrap(text: str, *, font: str = "Helvetica", size: float = 11, width: float = 235) -> list[str]:
    """Lines as a word processor fills them: words until the next would pass ``width``, hyphenating where
    the text has a soft hyphen and the first part still fits."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if pdfmetrics.stringWidth(candidate.replace("\u00ad", ""), font, size) <= width:
            line = candidate
            continue
        head, _, tail = word.partition("\u00ad")
        if tail and pdfmetrics.stringWidth(f"{line} {head}-", font, size) <= width:
            lines.append(f"{line} {head}-")
            line = tail
        else:
            lines.append(line)
            line = word
    lines.append(line)
    return [line.replace("\u00ad", "") for line in lines]


def _assert_offsets(document: ParsedDocument) -> None:
    for heading in document.headings:
        assert document.text[heading.start : heading.start + len(heading.title)] == heading.title


@pytest.fixture(autouse=True)
def _no_ocr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests of the text layer must not reach OCR; the OCR tests install their own engine."""

    def refuse(image: Image.Image) -> str:
        raise AssertionError("a page with a text layer was sent to OCR")

    monkeypatch.setattr(ocr, "recognize", refuse)


# --- lines and paragraphs -------------------------------------------------------------------------

POLICY_LINES = [
    "本合同所称第三方，是指除合同双方当事人及其关联方、不被其所有",
    "[2]者之外的任何自然人、法人或者其他组织。",
]
NOTICE_LINES = [
    "发生紧急情况时，值班人员应当“立即以电话通知值",
    "班经理，并在二十四小时内提交书面报告”，不得延误。",
]


def _policy_page(canvas: Canvas) -> None:
    canvas.setFont(SONG, 18)
    canvas.drawString(72, 780, "第一章 总则")
    canvas.setFont(SONG, 14)
    canvas.drawString(72, 745, "一、适用范围")
    y = _paragraph(canvas, POLICY_LINES, y=715, justify_to=330)
    _paragraph(canvas, NOTICE_LINES, y=y, justify_to=330)


def test_chinese_lines_are_joined_into_whole_sentences_and_paragraphs_stay_apart() -> None:
    document = parse_pdf(_pdf(_policy_page, title="员工手册"))

    assert document.text == (
        "第一章 总则\n\n一、适用范围\n\n"
        "本合同所称第三方，是指除合同双方当事人及其关联方、不被其所有[2]者之外的任何自然人、法人或者其他组织。\n\n"
        "发生紧急情况时，值班人员应当“立即以电话通知值班经理，并在二十四小时内提交书面报告”，不得延误。"
    )
    assert document.title == "员工手册"
    assert document.ocr_pages == ()


def test_headings_come_from_larger_fonts_ranked_by_size_at_exact_offsets() -> None:
    document = parse_pdf(_pdf(_policy_page))

    assert document.headings == (Heading(0, 1, "第一章 总则"), Heading(8, 2, "一、适用范围"))
    _assert_offsets(document)


ENGLISH = (
    "Every request for leave must be approved by a manager before the start date, and the docu\u00adment "
    "that confirms the approval is kept by the personnel office for two years."
)


def test_english_lines_are_joined_with_spaces_and_hyphenation_is_undone() -> None:
    lines = _wrap(ENGLISH)
    assert any(line.endswith("docu-") for line in lines), lines
    closing = ["Requests made during the annual closing period", "are decided by the director."]

    def page(canvas: Canvas) -> None:
        y = _paragraph(canvas, lines, y=780, font="Helvetica", leading=14)
        _paragraph(canvas, closing, y=y - 12, font="Helvetica", leading=14)

    document = parse_pdf(_pdf(page))

    assert document.text == (
        ENGLISH.replace("\u00ad", "")
        + "\n\nRequests made during the annual closing period are decided by the director."
    )


def test_a_hyphen_before_a_capital_stays() -> None:
    lines = [
        "The contract was signed for the company by Jean-",
        "Pierre Martin, its managing director, in May.",
    ]

    def page(canvas: Canvas) -> None:
        _paragraph(canvas, [*lines, "The end."], y=780, font="Helvetica", leading=14)

    assert parse_pdf(_pdf(page)).text.startswith(
        "The contract was signed for the company by Jean-Pierre Martin,"
    )


def test_lines_broken_on_purpose_keep_their_breaks() -> None:
    address = ["Wenda Software", "12 Long Street", "Beijing 100000"]

    def page(canvas: Canvas) -> None:
        y = _paragraph(canvas, _wrap(ENGLISH), y=780, font="Helvetica", leading=14)
        _paragraph(canvas, address, y=y - 14, font="Helvetica", leading=14)

    assert parse_pdf(_pdf(page)).text.endswith("\n\nWenda Software\n12 Long Street\nBeijing 100000")


def test_quotes_at_a_break_do_not_glue_english_words() -> None:
    lines = ["The notation to access the group is written as the “Example”", "name, and “Group” follows it."]

    def page(canvas: Canvas) -> None:
        _paragraph(canvas, lines, y=780, font="Helvetica", justify_to=330)

    assert parse_pdf(_pdf(page)).text == " ".join(lines)


def test_cells_of_a_table_row_are_kept_apart() -> None:
    def page(canvas: Canvas) -> None:
        canvas.setFont(SONG, 11)
        for y, row in ((780, ("名称", "数量", "说明")), (760, ("交换机", "4", "核心交换机"))):
            for x, cell in zip((72, 200, 300), row, strict=True):
                canvas.drawString(x, y, cell)

    assert parse_pdf(_pdf(page)).text == "名称 数量 说明\n交换机 4 核心交换机"


def test_contents_entries_keep_their_lines() -> None:
    entries = ["第一章 总则" + "…" * 20 + "1", "第二章 文件的编写" + "…" * 16 + "3", "附件" + "…" * 23 + "9"]

    def page(canvas: Canvas) -> None:
        _paragraph(canvas, entries, y=780, justify_to=330, last_line_full=True)

    assert parse_pdf(_pdf(page)).text == "\n".join(entries)


def test_items_start_paragraphs() -> None:
    articles = [
        "第一条 为了规范公司的文档管理工作，提高工作效率，根据国家",
        "有关法律法规，制定本办法。",
        "第二条 本办法适用于公司各部门及全体员工。",
        "（一）所有文件应当按照规定的格式编写、审核和归档。",
    ]

    def page(canvas: Canvas) -> None:
        y = _paragraph(canvas, articles[:2], y=780, justify_to=330)
        y = _paragraph(canvas, articles[2:3], y=y)
        _paragraph(canvas, articles[3:], y=y)

    assert parse_pdf(_pdf(page)).text == (
        "第一条 为了规范公司的文档管理工作，提高工作效率，根据国家有关法律法规，制定本办法。\n\n"
        "第二条 本办法适用于公司各部门及全体员工。\n\n"
        "（一）所有文件应当按照规定的格式编写、审核和归档。"
    )


def test_a_sentence_running_onto_the_next_page_is_joined() -> None:
    def first(canvas: Canvas) -> None:
        lines = [
            "第一条 本办法所称的文件，是指公司在经营管理活动中形成的",
            "具有保存价值的各种文字、图表和电子",
        ]
        _paragraph(canvas, lines, y=780, justify_to=330, last_line_full=True)

    def second(canvas: Canvas) -> None:
        _paragraph(canvas, ["数据等材料。"], y=780)
        _paragraph(canvas, ["第二条 文件的保管期限分为永久和定期两种。"], y=740)

    document = parse_pdf(_pdf(first, second))

    assert document.text == (
        "第一条 本办法所称的文件，是指公司在经营管理活动中形成的具有保存价值的各种文字、图表和电子数据等材料。\n\n"
        "第二条 文件的保管期限分为永久和定期两种。"
    )


# --- running headers, footers and page numbers ----------------------------------------------------

BODIES = [
    "第一条 为了规范公司的文档管理工作，制定本办法。",
    "第二条 本办法适用于公司各部门及全体员工。",
    "第三条 所有文件应当按照规定的格式编写。",
    "第四条 文件归档前应当经部门负责人审核。",
    "第五条 本办法自发布之日起施行。",
]


def test_running_headers_footers_and_page_numbers_are_dropped() -> None:
    def page(number: int) -> Page:
        def draw(canvas: Canvas) -> None:
            canvas.setFont(SONG, 9)
            canvas.drawString(72, 810, "公司内部资料")
            canvas.drawCentredString(297, 30, f"第 {number} 页")
            _paragraph(canvas, [BODIES[number - 1]], y=760)

        return draw

    document = parse_pdf(_pdf(*(page(number) for number in range(1, 6))))

    assert document.text == "\n\n".join(BODIES)


ANIMALS = [
    f"The {animal} is on this page." for animal in ("cat", "dog", "ox", "elk", "yak", "ram", "hen", "owl")
]


def test_a_header_in_three_pieces_and_chapter_headers_are_dropped() -> None:
    """Books name the chapter in their headers: each header runs through its chapter's pages only."""

    def page(number: int) -> Page:
        chapter = "Leave" if number <= 4 else "Travel"

        def draw(canvas: Canvas) -> None:
            canvas.setFont("Helvetica", 9)
            canvas.drawString(72, 810, "Wenda handbook")
            canvas.drawCentredString(297, 810, chapter)
            canvas.drawRightString(523, 810, str(number))
            _paragraph(canvas, [ANIMALS[number - 1]], y=760, font="Helvetica")

        return draw

    document = parse_pdf(_pdf(*(page(number) for number in range(1, 9))))

    assert document.text == "\n\n".join(ANIMALS)


@pytest.mark.parametrize("footer", ["{n}", "- {n} -", "Page {n} of 2", "第 {n} 页，共 2 页", "{n} / 2"])
def test_bare_page_numbers_are_dropped_but_numbers_in_the_text_stay(footer: str) -> None:
    def page(number: int) -> Page:
        def draw(canvas: Canvas) -> None:
            _paragraph(canvas, [BODIES[number - 1]], y=760)
            _paragraph(canvas, ["2024"], y=500)
            canvas.setFont(SONG, 9)
            canvas.drawCentredString(297, 30, footer.format(n=number))

        return draw

    document = parse_pdf(_pdf(page(1), page(2)))

    assert document.text == f"{BODIES[0]}\n\n2024\n\n{BODIES[1]}\n\n2024"


# --- outline, rotation, watermarks ----------------------------------------------------------------


def test_the_outline_gives_the_headings_when_its_titles_are_in_the_text() -> None:
    """The headings are set like the body text: only the outline tells them apart."""

    def page(canvas: Canvas) -> None:
        # reportlab keys outline entries by their destination's name.
        canvas.bookmarkPage("scope")
        canvas.bookmarkPage("covered")
        canvas.addOutlineEntry("1 Scope", "scope", level=0)
        # Outlines often leave out the heading's number.
        canvas.addOutlineEntry("Who is covered", "covered", level=1)
        y = _paragraph(canvas, ["1 Scope"], y=780, font="Helvetica", leading=28)
        y = _paragraph(canvas, ["1.1 Who is covered"], y=y, font="Helvetica", leading=28)
        _paragraph(canvas, ["Every employee and contractor."], y=y, font="Helvetica")

    document = parse_pdf(_pdf(page))

    assert document.text == "1 Scope\n\n1.1 Who is covered\n\nEvery employee and contractor."
    assert document.headings == (Heading(0, 1, "1 Scope"), Heading(9, 2, "1.1 Who is covered"))


def test_bold_lines_at_the_body_size_become_headings() -> None:
    def page(canvas: Canvas) -> None:
        _paragraph(canvas, ["Leave"], y=780, font="Helvetica-Bold", leading=20)
        _paragraph(canvas, _wrap(ENGLISH), y=760, font="Helvetica", leading=14)

    document = parse_pdf(_pdf(page))

    assert document.headings == (Heading(0, 1, "Leave"),)
    assert document.title == "untitled"  # reportlab's own placeholder title wins over the first heading


def test_a_page_turned_on_its_side_reads_left_to_right_and_slanted_watermarks_are_dropped() -> None:
    # pdfium reads no text turned by a quarter in reportlab's non-embedded Chinese font, so this is English.
    lines = _wrap(ENGLISH)

    def page(canvas: Canvas) -> None:
        canvas.saveState()
        canvas.translate(300, 420)
        canvas.rotate(45)
        canvas.setFont("Helvetica", 40)
        canvas.drawCentredString(0, 0, "CONFIDENTIAL")
        canvas.restoreState()
        canvas.saveState()
        canvas.translate(500, 0)
        canvas.rotate(90)
        _paragraph(canvas, lines, y=0, font="Helvetica", leading=14)
        canvas.restoreState()

    assert parse_pdf(_pdf(page)).text == ENGLISH.replace("\u00ad", "")


# --- OCR ------------------------------------------------------------------------------------------


def _scan(text: str, *, width: int = 1240, height: int = 1754) -> Image.Image:
    """A page as a scanner delivers it: black text on white, 150 dpi."""
    image = Image.new("L", (width, height), 255)
    ImageDraw.Draw(image).text((120, 200), text, fill=0, font=ImageFont.load_default(size=48))
    return image


def _scanned_page(text: str) -> Page:
    def draw(canvas: Canvas) -> None:
        page_width, page_height = canvas._pagesize
        canvas.drawImage(ImageReader(_scan(text)), 0, 0, page_width, page_height)

    return draw


def _text_page(canvas: Canvas) -> None:
    _paragraph(canvas, [BODIES[0]], y=760)


@pytest.fixture
def recognized(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Image.Image]]:
    """A stand-in OCR engine that reads every page image as the same line and keeps the images it got."""
    images: list[Image.Image] = []

    def recognize(image: Image.Image) -> str:
        images.append(image)
        return "Invoice 2024-117: total 1,250.00"

    monkeypatch.setattr(ocr, "recognize", recognize)
    yield images


def test_an_image_only_page_is_read_by_ocr_and_reported(recognized: list[Image.Image]) -> None:
    document = parse_pdf(_pdf(_text_page, _scanned_page("Invoice"), _text_page))

    assert document.text == f"{BODIES[0]}\n\nInvoice 2024-117: total 1,250.00\n\n{BODIES[0]}"
    assert document.ocr_pages == (2,)
    assert len(recognized) == 1  # the pages with a text layer were not OCR'd
    # A4 at 200 dpi would be 1654 x 2339 pixels: it is rendered no longer than the engine reads.
    width, height = recognized[0].size
    assert ocr.MAX_SIDE - 1 <= height <= ocr.MAX_SIDE
    assert abs(width / height - 210 / 297) < 0.01


def test_a_small_page_is_rendered_at_200_dpi_and_a_poster_within_the_engines_size(
    recognized: list[Image.Image],
) -> None:
    postcard = (4 * 72, 6 * 72)
    parse_pdf(_pdf(_scanned_page("Postcard"), size=postcard))
    parse_pdf(_pdf(_scanned_page("Poster"), size=(5000, 5000)))

    assert recognized[0].size == (800, 1200)
    assert max(recognized[1].size) <= ocr.MAX_SIDE


def test_ocr_progress_is_reported_page_by_page(recognized: list[Image.Image]) -> None:
    progress: list[tuple[int, int]] = []

    with reporting_pages(lambda done, total: progress.append((done, total))):
        parse_pdf(_pdf(_scanned_page("One"), _text_page, _scanned_page("Two")))

    assert progress == [(1, 2), (2, 2)]


# Written out rather than by pypdf's PdfWriter, whose output for an empty document depends on what earlier
# tests in the same process did with it.
NO_PAGES = (
    b"%PDF-1.3\n1 0 obj\n<< /Type /Pages /Count 0 /Kids [ ] >>\nendobj\n"
    b"2 0 obj\n<< /Type /Catalog /Pages 1 0 R >>\nendobj\n"
    b"xref\n0 3\n0000000000 65535 f \n0000000009 00000 n \n0000000062 00000 n \n"
    b"trailer\n<< /Size 3 /Root 2 0 R >>\nstartxref\n111\n%%EOF\n"
)


def test_a_pdf_without_pages_says_so() -> None:
    with pytest.raises(DocumentParseError, match="has no pages"):
        parse_pdf(NO_PAGES)


def test_blank_pages_are_not_sent_to_ocr() -> None:
    def page_number_only(canvas: Canvas) -> None:
        canvas.drawString(297, 30, "7")

    with pytest.raises(DocumentParseError, match="contains no text: its pages are blank"):
        parse_pdf(_pdf(lambda canvas: None, page_number_only))


def test_a_scan_in_which_ocr_finds_nothing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ocr, "recognize", lambda image: "")

    with pytest.raises(DocumentParseError, match="no text layer, and OCR found no text in its page images"):
        parse_pdf(_pdf(_scanned_page("")))


@pytest.mark.slow  # loads the OCR models
def test_the_ocr_engine_reads_a_scanned_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real engine
    from ingest.ocr import recognize

    try:
        recognize(_scan("probe"))
    except DocumentParseError as exc:
        if exc.message == "not implemented yet":
            pytest.skip("ingest.ocr.recognize is not implemented yet")
        raise

    document = parse_pdf(_pdf(_text_page, _scanned_page("Invoice 117 total 1250 yuan")))

    assert document.ocr_pages == (2,)
    assert document.text.startswith(BODIES[0] + "\n\n")
    assert "Invoice" in document.text and "1250" in document.text


# --- through the dispatcher: the old parser's behaviour kept --------------------------------------


@pytest.fixture
def dispatcher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(parsing._PARSERS, FileType.PDF, parse_pdf)


def _report() -> bytes:
    def first(canvas: Canvas) -> None:
        _paragraph(
            canvas,
            ["Quarterly report", "Revenue grew by twelve percent in the third quarter."],
            y=800,
            font="Helvetica",
            size=12,
            leading=16,
        )

    def second(canvas: Canvas) -> None:
        _paragraph(
            canvas,
            ["Costs fell because hiring was paused until the spring."],
            y=800,
            font="Helvetica",
            size=12,
        )

    return _pdf(first, second, title="Q3 Report")


def _encrypted(data: bytes, *, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    # RC4 needs no optional dependency; AES would need the cryptography package.
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


@pytest.mark.usefixtures("dispatcher")
def test_text_and_title_as_before() -> None:
    assert parse_document(_report(), FileType.PDF) == ParsedDocument(
        text=(
            "Quarterly report\nRevenue grew by twelve percent in the third quarter.\n\n"
            "Costs fell because hiring was paused until the spring."
        ),
        file_type=FileType.PDF,
        title="Q3 Report",
    )


@pytest.mark.usefixtures("dispatcher")
def test_a_password_protected_pdf_says_so() -> None:
    with pytest.raises(DocumentParseError, match="the PDF file is encrypted with a password"):
        parse_document(_encrypted(_report(), user_password="secret"), FileType.PDF)


@pytest.mark.usefixtures("dispatcher")
def test_a_pdf_encrypted_only_against_editing_opens() -> None:
    assert parse_document(_encrypted(_report(), user_password=""), FileType.PDF).text.startswith(
        "Quarterly report"
    )


@pytest.mark.usefixtures("dispatcher")
@pytest.mark.parametrize("cut", [300, 0.5, None])
def test_a_damaged_pdf_is_a_parse_error(cut: int | float | None) -> None:
    data = _report()
    if cut is None:
        data = b"%PDF-1.7\n" + b"\x00garbage\xff" * 200
    else:
        data = data[: cut if isinstance(cut, int) else int(len(data) * cut)]
    with pytest.raises(DocumentParseError, match=r"the PDF file is damaged or not readable: .+"):
        parse_document(data, FileType.PDF)
