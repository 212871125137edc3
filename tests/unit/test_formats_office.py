"""Slides, OpenDocument text and books (PPTX, ODP, ODT, EPUB), written in each test by the libraries that
write these formats, and hostile variants of them: zip bombs, billion laughs, external entities."""

from __future__ import annotations

import io
import re
import sys
import zipfile
from collections.abc import Callable

import pptx
import pytest
from ebooklib import epub
from odf import dc, draw, office, presentation, style, table, text
from odf.opendocument import OpenDocumentPresentation, OpenDocumentText
from pptx.slide import Slide
from pptx.util import Inches

from app.rag.errors import DocumentParseError
from app.rag.types import FileType, ParsedDocument
from ingest.chunking import split_document
from ingest.formats import office as office_formats
from ingest.parse_limits import parse_in_subprocess
from ingest.parsing import parse_document
from tests.fakes import FakeEmbedder

# --- documents written by the libraries -------------------------------------------------------------


def _textbox(slide: Slide, *, left: float, top: float, words: str) -> None:
    box = slide.shapes.add_textbox(Inches(left), Inches(top), Inches(3), Inches(0.5))
    box.text_frame.text = words


def _pptx(*, core_title: str = "") -> bytes:
    deck = pptx.Presentation()
    deck.core_properties.title = core_title
    cover = deck.slides.add_slide(deck.slide_layouts[0])  # "Title Slide"
    assert cover.shapes.title is not None
    cover.shapes.title.text = "季度报告 2024"
    cover.placeholders[1].text = "财务部 Finance team"

    results = deck.slides.add_slide(deck.slide_layouts[5])  # "Title Only"
    assert results.shapes.title is not None
    results.shapes.title.text = "Revenue 收入"
    # Added out of reading order on purpose.
    _textbox(results, left=5, top=3, words="右栏 right column")
    _textbox(results, left=1, top=3, words="左栏 left column\n第二段 second paragraph")
    _textbox(results, left=1, top=2, words="上方 top line")
    grid = results.shapes.add_table(2, 3, Inches(1), Inches(4), Inches(6), Inches(1)).table
    for row, values in enumerate([["地区", "收入", "增长"], ["华东", "120", "5%"]]):
        for column, value in enumerate(values):
            grid.cell(row, column).text = value
    group = results.shapes.add_group_shape()
    group.shapes.add_textbox(
        Inches(1), Inches(6), Inches(3), Inches(0.5)
    ).text_frame.text = "分组文字 grouped text"
    results.notes_slide.notes_text_frame.text = "讲者备注：独角兽指标 UNICORN-42 只在这一页。"

    untitled = deck.slides.add_slide(deck.slide_layouts[6])  # "Blank"
    _textbox(untitled, left=1, top=1, words="没有标题的页面 untitled page")
    buffer = io.BytesIO()
    deck.save(buffer)
    return buffer.getvalue()


def _odt() -> bytes:
    document = OpenDocumentText()
    document.meta.addElement(dc.Title(text="员工手册 Staff handbook"))
    document.meta.addElement(dc.Creator(text="人事部"))
    title_style = style.Style(name="Title", family="paragraph")
    document.styles.addElement(title_style)
    body = document.text
    body.addElement(text.P(stylename=title_style, text="员工手册"))
    body.addElement(text.H(outlinelevel=1, text="第一章 总则"))

    scope = text.P(text="本手册适用于全体员工。")
    note = text.Note(id="ftn1", noteclass="footnote")
    note.addElement(text.NoteCitation(text="1"))
    note_body = text.NoteBody()
    note_body.addElement(text.P(text="实习生另有规定。"))
    note.addElement(note_body)
    scope.addElement(note)
    scope.addText("外包人员参照执行。")
    comment = office.Annotation()
    comment.addElement(text.P(text="审阅意见：请法务确认"))
    scope.addElement(comment)
    body.addElement(scope)

    body.addElement(text.H(outlinelevel=2, text="1.1 Leave policy"))
    leave = text.P(text="Annual leave is")
    leave.addElement(text.S(c=3))
    leave.addText("15 days; the carry-over code is LEAVE-7781.")
    leave.addElement(text.LineBreak())
    leave.addText("第二行 second line")
    body.addElement(leave)

    fruits = text.List()
    for name in ("苹果 apples", "香蕉 bananas"):
        item = text.ListItem()
        item.addElement(text.P(text=name))
        fruits.addElement(item)
    nested = text.List()
    nested_item = text.ListItem()
    nested_item.addElement(text.P(text="青香蕉 green bananas"))
    nested.addElement(nested_item)
    item.addElement(nested)
    body.addElement(fruits)

    staff = table.Table(name="Staff")
    staff.addElement(table.TableColumn(numbercolumnsrepeated=2))
    for values in (["姓名", "部门"], ["李四", "研发部"]):
        row = table.TableRow()
        for value in values:
            cell = table.TableCell()
            cell.addElement(text.P(text=value))
            row.addElement(cell)
        staff.addElement(row)
    body.addElement(staff)
    body.addElement(text.H(outlinelevel=1, text="第二章 附则"))
    body.addElement(text.P(text="本手册自发布之日起施行。"))
    buffer = io.BytesIO()
    document.write(buffer)
    return buffer.getvalue()


def _frame(kind: str | None, *, x: str, y: str, paragraphs: list[str]) -> draw.Frame:
    attributes = {"class": kind} if kind else {}
    frame = draw.Frame(attributes=attributes, x=x, y=y, width="10cm", height="2cm")
    box = draw.TextBox()
    frame.addElement(box)
    for words in paragraphs:
        box.addElement(text.P(text=words))
    return frame


def _odp(*, title: str = "") -> bytes:
    deck = OpenDocumentPresentation()
    if title:
        deck.meta.addElement(dc.Title(text=title))
    layout = style.PageLayout(name="layout")
    deck.automaticstyles.addElement(layout)
    master = style.MasterPage(name="master", pagelayoutname=layout)
    deck.masterstyles.addElement(master)

    first = draw.Page(masterpagename=master, name="page1")
    deck.presentation.addElement(first)
    # Added out of reading order on purpose.
    first.addElement(_frame("outline", x="1cm", y="6cm", paragraphs=["下方正文 body below"]))
    first.addElement(_frame("title", x="1cm", y="1cm", paragraphs=["市场分析"]))
    first.addElement(_frame(None, x="12cm", y="3cm", paragraphs=["右上 right top"]))
    first.addElement(_frame(None, x="1cm", y="3cm", paragraphs=["左上 left top"]))
    group = draw.G()
    group.addElement(_frame(None, x="6cm", y="9cm", paragraphs=["组内右 group right"]))
    group.addElement(_frame(None, x="1cm", y="9cm", paragraphs=["组内左 group left"]))
    first.addElement(group)
    notes = presentation.Notes()
    notes.addElement(_frame("notes", x="1cm", y="1cm", paragraphs=["备注：市场份额指标 SHARE-314", "第二行"]))
    first.addElement(notes)

    # No title frame: the page's own name stands in; LibreOffice's automatic "pageN" names do not.
    named = draw.Page(masterpagename=master, name="Roadmap 路线图")
    deck.presentation.addElement(named)
    named.addElement(_frame(None, x="1cm", y="1cm", paragraphs=["第三季度上线 ships in Q3"]))
    unnamed = draw.Page(masterpagename=master, name="page3")
    deck.presentation.addElement(unnamed)
    unnamed.addElement(_frame(None, x="1cm", y="1cm", paragraphs=["谢谢 thanks"]))
    buffer = io.BytesIO()
    deck.write(buffer)
    return buffer.getvalue()


def _epub() -> bytes:
    book = epub.EpubBook()
    book.set_identifier("wenda-test-book")
    book.set_title("三体 The Three-Body Problem")
    book.set_language("zh")
    book.add_author("刘慈欣")
    opening = epub.EpubHtml(title="第一章 科学边界", file_name="text/opening.xhtml", lang="zh")
    opening.content = (
        "<html><body><h1>第一章 科学边界</h1><p>汪淼觉得，来找他的这四个人是一个奇怪的组合。</p>"
        "<h2>1.1 倒计时</h2><p>The countdown reads <b>1200</b> hours; the code is COUNT-5521.</p>"
        "<table><tr><th>名字</th><th>职业</th></tr><tr><td>汪淼</td><td>纳米材料</td></tr></table>"
        "</body></html>"
    )
    # No heading of its own: the table of contents names it.
    farm = epub.EpubHtml(title="第二章 射手和农场主", file_name="text/farm.xhtml", lang="zh")
    farm.content = (
        "<html><body><p><ruby>射<rt>shè</rt></ruby>手假说与农场主假说 FARM-2049。</p>"
        "<script>document.write('脚本')</script></body></html>"
    )
    book.add_item(farm)  # before the opening in the manifest; the spine decides the order
    book.add_item(opening)
    book.toc = (
        epub.Link("text/opening.xhtml", "第一章 科学边界", "opening"),
        epub.Link("text/farm.xhtml", "第二章 射手和农场主", "farm"),
    )
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", opening, farm]
    buffer = io.BytesIO()
    epub.write_epub(buffer, book)
    return buffer.getvalue()


# --- changing one part of a container ------------------------------------------------------------


def _rewritten(data: bytes, member: str, change: Callable[[bytes], bytes]) -> bytes:
    """The ZIP container ``data`` with one member's bytes changed (the others as they were, mimetype stored)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    assert member in source.namelist()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            content = source.read(info)
            target.writestr(info, change(content) if info.filename == member else content)
    return buffer.getvalue()


def _with_doctype(xml: bytes, declarations: str, marker: str, reference: str) -> bytes:
    """``xml`` with a DOCTYPE declaring ``declarations``, and ``reference`` used right after ``marker``."""
    root = re.search(rb"<([A-Za-z_][^\s/>]*)", xml)
    assert root is not None and marker.encode() in xml
    doctype = f"<!DOCTYPE {root.group(1).decode()} [{declarations}]>".encode()
    xml = re.sub(rb"<!DOCTYPE[^>]*>", b"", xml, count=1)
    declaration_end = xml.index(b"?>") + 2 if xml.startswith(b"<?xml") else 0
    xml = xml[:declaration_end] + doctype + xml[declaration_end:]
    return xml.replace(marker.encode(), (marker + " " + reference).encode(), 1)


# --- checks shared by the formats -------------------------------------------------------------------


def _assert_headings_point_at_their_titles(document: ParsedDocument) -> None:
    for heading in document.headings:
        assert document.text[heading.start :].startswith(heading.title), heading


def _section_of(document: ParsedDocument, fact: str) -> str:
    """The section path of the chunk that holds ``fact``, as the chunker cuts the document."""
    chunks = split_document(
        document, count_tokens=FakeEmbedder().count_tokens, chunk_tokens=200, overlap_tokens=0
    )
    return next(chunk.section for chunk in chunks if fact in chunk.text)


def _in_order(haystack: str, *needles: str) -> bool:
    positions = [haystack.find(needle) for needle in needles]
    return -1 not in positions and positions == sorted(positions)


# --- PPTX ---------------------------------------------------------------------------------------------


def test_pptx_slides_are_sections_with_their_text_in_reading_order_and_notes_last() -> None:
    document = parse_document(_pptx(), FileType.PPTX)

    assert [(h.level, h.title) for h in document.headings] == [
        (1, "Slide 1: 季度报告 2024"),
        (1, "Slide 2: Revenue 收入"),
        (1, "Slide 3"),
    ]
    _assert_headings_point_at_their_titles(document)
    assert document.title == "季度报告 2024"
    assert "财务部 Finance team" in document.text
    assert _in_order(
        document.text,
        "Slide 2: Revenue 收入",
        "上方 top line",
        "左栏 left column\n第二段 second paragraph",
        "右栏 right column",
        "地区 | 收入 | 增长\n华东 | 120 | 5%",
        "分组文字 grouped text",
        "Notes: 讲者备注：独角兽指标 UNICORN-42 只在这一页。",
        "Slide 3",
        "没有标题的页面 untitled page",
    )
    # The title is the heading, not also a block of the slide's body.
    assert document.text.count("Revenue 收入") == 1
    assert _section_of(document, "UNICORN-42") == "Slide 2: Revenue 收入"


def test_pptx_title_comes_from_the_core_properties_when_set() -> None:
    document = parse_document(_pptx(core_title="年度总结 Annual review"), FileType.PPTX)
    assert document.title == "年度总结 Annual review"


# --- ODT ----------------------------------------------------------------------------------------------


def test_odt_outline_levels_become_headings_and_blocks_keep_their_order() -> None:
    document = parse_document(_odt(), FileType.ODT)

    assert [(h.level, h.title) for h in document.headings] == [
        (1, "员工手册"),  # the "Title" paragraph style, as DOCX's
        (1, "第一章 总则"),
        (2, "1.1 Leave policy"),
        (1, "第二章 附则"),
    ]
    _assert_headings_point_at_their_titles(document)
    assert document.title == "员工手册 Staff handbook"
    assert document.metadata == (("Author", "人事部"),)
    assert _in_order(
        document.text,
        "本手册适用于全体员工。外包人员参照执行。",
        "[1] 实习生另有规定。",
        "1.1 Leave policy",
        "Annual leave is   15 days; the carry-over code is LEAVE-7781.\n第二行 second line",
        "- 苹果 apples\n- 香蕉 bananas\n  - 青香蕉 green bananas",
        "姓名 | 部门\n李四 | 研发部",
        "第二章 附则",
    )
    assert "审阅意见" not in document.text  # reviewers' comments are not the document's text
    assert _section_of(document, "LEAVE-7781") == "第一章 总则 > 1.1 Leave policy"


def test_odt_part_that_is_not_well_formed_is_refused_without_printing_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = _rewritten(_odt(), "content.xml", lambda xml: xml.replace(b"</office:text>", b"", 1))
    with pytest.raises(DocumentParseError, match=r"content\.xml is not well-formed XML"):
        parse_document(broken, FileType.ODT)
    # odfpy, left to itself, prints the whole part to stdout and goes on with what it had read.
    assert "员工手册" not in capsys.readouterr().out


def test_a_presentation_uploaded_as_odt_is_refused_with_a_reason() -> None:
    with pytest.raises(DocumentParseError, match="no text body"):
        parse_document(_odp(), FileType.ODT)


# --- ODP ----------------------------------------------------------------------------------------------


def test_odp_pages_are_sections_titled_by_their_title_frame_or_name() -> None:
    document = parse_document(_odp(), FileType.ODP)

    assert [(h.level, h.title) for h in document.headings] == [
        (1, "Slide 1: 市场分析"),
        (1, "Slide 2: Roadmap 路线图"),
        (1, "Slide 3"),
    ]
    _assert_headings_point_at_their_titles(document)
    assert document.title == "市场分析"
    assert _in_order(
        document.text,
        "左上 left top",
        "右上 right top",
        "下方正文 body below",
        "组内左 group left",
        "组内右 group right",
        "Notes: 备注：市场份额指标 SHARE-314\n第二行",
        "第三季度上线 ships in Q3",
        "谢谢 thanks",
    )
    assert document.text.count("市场分析") == 1
    assert _section_of(document, "SHARE-314") == "Slide 1: 市场分析"


def test_odp_title_comes_from_the_metadata_when_set() -> None:
    assert parse_document(_odp(title="市场季报"), FileType.ODP).title == "市场季报"


# --- EPUB ---------------------------------------------------------------------------------------------


def test_epub_chapters_follow_the_spine_with_their_headings() -> None:
    document = parse_document(_epub(), FileType.EPUB)

    assert [(h.level, h.title) for h in document.headings] == [
        (1, "第一章 科学边界"),
        (2, "1.1 倒计时"),
        (1, "第二章 射手和农场主"),  # from the table of contents: the chapter has no heading
    ]
    _assert_headings_point_at_their_titles(document)
    assert document.title == "三体 The Three-Body Problem"
    assert document.metadata == (("Author", "刘慈欣"),)
    assert _in_order(
        document.text,
        "汪淼觉得，来找他的这四个人是一个奇怪的组合。",
        "The countdown reads 1200 hours; the code is COUNT-5521.",
        "名字 | 职业\n汪淼 | 纳米材料",
        "射手假说与农场主假说 FARM-2049。",
    )
    # The navigation document is not a chapter; scripts and ruby annotations are not text.
    assert document.text.count("第一章 科学边界") == 1
    assert "shè" not in document.text and "脚本" not in document.text
    assert _section_of(document, "COUNT-5521") == "第一章 科学边界 > 1.1 倒计时"
    assert _section_of(document, "FARM-2049") == "第二章 射手和农场主"


def test_epub_chapter_declaring_entities_reads_without_them() -> None:
    def declare(xhtml: bytes) -> bytes:
        return _with_doctype(xhtml, '<!ENTITY nbsp "&#160;">', "COUNT-5521", "&nbsp;")

    document = parse_document(_rewritten(_epub(), "EPUB/text/opening.xhtml", declare), FileType.EPUB)
    assert document.text.startswith("第一章 科学边界")  # no "]>" left over from the declarations
    # HTML knows &nbsp; without the declaration (and the HTML walker writes it as a plain space).
    assert "the code is COUNT-5521 ." in document.text


# --- hostile files ------------------------------------------------------------------------------------


def _parse_isolated(data: bytes, file_type: FileType) -> ParsedDocument:
    """Parse as the worker does: in a child process under memory and time limits."""
    return parse_in_subprocess(data, file_type, timeout_seconds=30, memory_mb=1024)


_LAUGHS = '<!ENTITY lol "lol">' + "".join(
    f'<!ENTITY lol{level} "{("&lol;" if level == 1 else f"&lol{level - 1};") * 10}">'
    for level in range(1, 10)
)
_SECRET = '<!ENTITY secret SYSTEM "file:///etc/passwd">'


def _bomb(xml: bytes) -> bytes:
    # Trailing whitespace keeps the part well-formed: only its size, 1,000 times its compressed size, is wrong.
    return xml + b" " * (16 * 1024 * 1024)


# Each format's main XML part, and a word in it where an expanded entity would land.
MAIN_PARTS = {
    "pptx": (FileType.PPTX, _pptx, "ppt/slides/slide2.xml", "right column"),
    "odt": (FileType.ODT, _odt, "content.xml", "LEAVE-7781"),
    "odp": (FileType.ODP, _odp, "content.xml", "SHARE-314"),
    "epub": (FileType.EPUB, _epub, "EPUB/content.opf", "Three-Body"),
}


@pytest.mark.skipif(sys.platform == "win32", reason="resource limits need POSIX")
@pytest.mark.parametrize("kind", sorted(MAIN_PARTS))
def test_zip_bomb_is_refused_by_the_parser_process_and_the_next_file_parses(kind: str) -> None:
    file_type, make, part, _ = MAIN_PARTS[kind]
    original = make()
    with pytest.raises(DocumentParseError, match="zip bomb"):
        _parse_isolated(_rewritten(original, part, _bomb), file_type)
    assert _parse_isolated(original, file_type) == parse_document(original, file_type)


@pytest.mark.skipif(sys.platform == "win32", reason="resource limits need POSIX")
@pytest.mark.parametrize("kind", sorted(MAIN_PARTS))
@pytest.mark.parametrize(("declarations", "reference"), [(_LAUGHS, "&lol9;"), (_SECRET, "&secret;")])
def test_entity_declarations_in_the_main_part_are_refused_with_a_reason(
    kind: str, declarations: str, reference: str
) -> None:
    file_type, make, part, marker = MAIN_PARTS[kind]
    hostile = _rewritten(make(), part, lambda xml: _with_doctype(xml, declarations, marker, reference))
    with pytest.raises(DocumentParseError, match="entities") as refused:
        _parse_isolated(hostile, file_type)
    assert "root:" not in refused.value.message


@pytest.mark.skipif(sys.platform == "win32", reason="resource limits need POSIX")
@pytest.mark.parametrize(("declarations", "reference"), [(_LAUGHS, "&lol9;"), (_SECRET, "&secret;")])
def test_epub_chapter_with_hostile_entities_parses_without_expanding_them(
    declarations: str, reference: str
) -> None:
    hostile = _rewritten(
        _epub(),
        "EPUB/text/opening.xhtml",
        lambda xml: _with_doctype(xml, declarations, "COUNT-5521", reference),
    )
    document = _parse_isolated(hostile, FileType.EPUB)
    assert "COUNT-5521" in document.text
    assert "lollol" not in document.text and "root:" not in document.text


@pytest.mark.parametrize("kind", ["pptx", "epub"])
@pytest.mark.parametrize(("declarations", "reference"), [(_LAUGHS, "&lol9;"), (_SECRET, "&secret;")])
def test_the_libraries_own_xml_parsers_expand_nothing_past_our_check(
    monkeypatch: pytest.MonkeyPatch, kind: str, declarations: str, reference: str
) -> None:
    # In process: a forked parser would not see the patch. Without our check, lxml (resolve_entities=False)
    # either refuses the file (its amplification limit) or reads it with the reference left out.
    monkeypatch.setattr(office_formats, "_ENTITY_DECLARATION", ())
    file_type, make, part, marker = MAIN_PARTS[kind]
    hostile = _rewritten(make(), part, lambda xml: _with_doctype(xml, declarations, marker, reference))
    try:
        document = parse_document(hostile, file_type)
    except DocumentParseError as exc:
        assert "root:" not in exc.message
    else:
        assert "lollol" not in document.text and "root:" not in document.text
        assert "lollol" not in document.title and "root:" not in document.title


@pytest.mark.parametrize(("declarations", "reference"), [(_LAUGHS, "&lol9;"), (_SECRET, "&secret;")])
def test_odfpy_refuses_entities_past_our_check(
    monkeypatch: pytest.MonkeyPatch, declarations: str, reference: str
) -> None:
    # odfpy reads through defusedxml.sax, which refuses any entity declaration.
    monkeypatch.setattr(office_formats, "_check_odf_xml", lambda part, name, label: None)
    hostile = _rewritten(
        _odt(), "content.xml", lambda xml: _with_doctype(xml, declarations, "LEAVE-7781", reference)
    )
    with pytest.raises(DocumentParseError, match="EntitiesForbidden"):
        parse_document(hostile, FileType.ODT)


def test_deep_nesting_is_walked_without_recursion_and_groups_are_bounded() -> None:
    depth = 5000
    sections = _rewritten(
        _odt(),
        "content.xml",
        lambda xml: xml.replace(b"<text:h", b"<text:section>" * depth + b"<text:h", 1).replace(
            b"</office:text>", b"</text:section>" * depth + b"</office:text>", 1
        ),
    )
    assert "LEAVE-7781" in parse_document(sections, FileType.ODT).text
    # Groups are walked ten deep; what a hostile file nests below that is left out, the rest of it is read.
    groups = _rewritten(
        _odp(),
        "content.xml",
        lambda xml: xml.replace(b"<draw:g>", b"<draw:g>" * depth, 1).replace(
            b"</draw:g>", b"</draw:g>" * depth, 1
        ),
    )
    document = parse_document(groups, FileType.ODP)
    assert "SHARE-314" in document.text and "组内左" not in document.text
