from __future__ import annotations

import io
import zipfile

import docx
import pytest
from pypdf import PdfReader, PdfWriter
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from app.rag.errors import DocumentParseError
from app.rag.types import FileType, Heading, ParsedDocument
from ingest import parsing
from ingest.parsing import decode_text, parse_document

SHORT_SIMPLIFIED = "中文测试：这是一个用于检测编码的句子。"
SHORT_TRADITIONAL = "繁體中文測試：這是一個用於檢測編碼的句子。"
LONG_SIMPLIFIED = (
    "第一章 总则\n\n"
    "第一条 为了规范公司的文档管理工作，提高工作效率，根据国家有关法律法规，制定本办法。\n\n"
    "第二条 本办法适用于公司各部门及全体员工。所有文件应当按照规定的格式编写、审核和归档。\n\n"
    "第三条 数据库连接失败时，请检查网络设置，并联系信息技术部门。"
)
LONG_TRADITIONAL = (
    "第一章 總則\n\n"
    "第一條 為了規範公司的文件管理工作，提高工作效率，根據國家有關法律法規，制定本辦法。\n\n"
    "第二條 本辦法適用於公司各部門及全體員工。所有文件應當按照規定的格式編寫、審核和歸檔。\n\n"
    "第三條 資料庫連線失敗時，請檢查網路設定，並聯繫資訊技術部門。"
)


# --- fixtures built in memory -------------------------------------------------


def _pdf(pages: list[list[str]], *, title: str | None = None) -> bytes:
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    if title:
        pdf.setTitle(title)
    for lines in pages:
        y = 800
        for line in lines:
            pdf.drawString(72, y, line)
            y -= 16
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def _text_pdf() -> bytes:
    return _pdf(
        [
            ["Quarterly report", "Revenue grew by twelve percent in the third quarter."],
            ["Costs fell because hiring was paused until the spring."],
        ],
        title="Q3 Report",
    )


def _encrypted(data: bytes, *, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    # RC4 needs no optional dependency; AES would need the cryptography package.
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def _docx(*, core_title: str = "") -> bytes:
    document = docx.Document()
    document.core_properties.title = core_title
    document.add_heading("Annual Plan", level=0)
    document.add_paragraph("This plan sets the goals for the year.")
    document.add_heading("Budget", level=1)
    document.add_paragraph("Spending is capped.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "Item"
    table.cell(0, 1).text = "Cost"
    table.cell(1, 0).text = "Servers"
    table.cell(1, 1).text = "1200"
    document.add_heading("Risks 风险", level=2)
    document.add_paragraph("")  # empty paragraphs leave no trace in the text
    document.add_paragraph("Supply delays.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


ARTICLE_HTML = """<!DOCTYPE html>
<html><head><title> Storage   Guide </title><style>body { color: red }</style>
<script>var tracking = "SCRIPT TEXT";</script></head>
<body>
<header><a href="/">SITE BANNER</a></header>
<nav><ul><li><a href="/a">NAV LINK ONE</a></li><li>NAV LINK TWO</li></ul></nav>
<div role="navigation">ROLE NAV</div>
<article>
  <header><h1>How to   store <em>documents</em></h1></header>
  <p>Keep documents   in a <b>dry</b> place.<br>Check them yearly.</p>
  <h2>Formats</h2>
  <p>We accept PDF and DOCX.</p>
  <pre>def keep():
    return  True</pre>
  <table><tr><th>Format</th><th>Size</th><th>Notes</th></tr><tr><td>PDF</td><td>10&nbsp;MB</td><td></td></tr></table>
  <ul><li>First item</li><li>Second item</li></ul>
  <aside>ASIDE TEXT</aside>
  <!-- COMMENT TEXT -->
  <noscript>NOSCRIPT TEXT</noscript>
  <form><label>FORM LABEL</label></form>
</article>
<footer>FOOTER TEXT</footer>
<script>console.log("MORE SCRIPT")</script>
</body></html>"""

MARKDOWN = """---
title: front matter
---
# Project  Wenda

Intro paragraph.

## Install ##

```bash
# not a heading
pip install wenda
```

~~~
## also not a heading
~~~

Usage Guide
===========

Details
-------

- list item
---

#hashtag is not a heading
    # indented code is not a heading
###### Deep
"""


# --- text decoding ------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gbk", "gb18030"])
@pytest.mark.parametrize(
    "text", [SHORT_SIMPLIFIED, LONG_SIMPLIFIED, "你好", "北京欢迎你", "测试文件\n第一行\n第二行"]
)
def test_decodes_simplified_chinese_legacy_encodings(text: str, encoding: str) -> None:
    assert decode_text(text.encode(encoding)) == text


@pytest.mark.parametrize("encoding", ["big5", "cp950"])
@pytest.mark.parametrize(
    "text", [SHORT_TRADITIONAL, LONG_TRADITIONAL, "這是繁體字", "簡體與繁體", "你好", "香港"]
)
def test_decodes_traditional_chinese_big5(text: str, encoding: str) -> None:
    assert decode_text(text.encode(encoding)) == text


def test_gb18030_four_byte_characters() -> None:
    text = "中文测试：这是一个用于检测编码的句子。𠀀😀"
    assert decode_text(text.encode("gb18030")) == text


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("안녕하세요. 만나서 반갑습니다.", "cp949"),
        ("こんにちは、世界。日本語のテキストです。", "shift_jis"),
        ("Привет, мир! Это тест кодировки.", "cp1251"),
    ],
)
def test_chinese_fallback_does_not_override_other_languages(text: str, encoding: str) -> None:
    assert decode_text(text.encode(encoding)) == text


@pytest.mark.parametrize(
    "encoded",
    [
        "中文 text\r\nline".encode("utf-16"),
        "中文 text\r\nline".encode("utf-16-be"),
        "中文 text\r\nline".encode("utf-32"),
        "中文 text\r\nline".encode("utf-8-sig"),
        "中文 text\r\nline".encode(),
        "ASCII text\r\nline".encode("utf-16-le"),
    ],
)
def test_decodes_unicode_and_normalizes_newlines(encoded: bytes) -> None:
    decoded = decode_text(encoded)
    assert decoded.endswith("text\nline")
    assert "\r" not in decoded
    assert "\ufeff" not in decoded


def test_old_mac_newlines_and_nul_bytes() -> None:
    assert decode_text(b"a\rb\x00c\r\n") == "a\nbc\n"


def test_utf8_cut_off_mid_character_loses_only_that_character() -> None:
    assert decode_text(LONG_SIMPLIFIED.encode()[:-1]) == LONG_SIMPLIFIED[:-1]


def test_damaged_utf8_is_an_error_not_mojibake() -> None:
    # charset-normalizer reads this as hp_roman8 ('Cafûˋ au lait ...').
    data = ("Café au lait " * 20).encode() + b"\xe9 (one Latin-1 byte)"
    with pytest.raises(DocumentParseError, match="UTF-8 text except for 1 invalid byte sequence"):
        decode_text(data)


def test_undetectable_encoding_is_an_error_not_replacement_characters() -> None:
    with pytest.raises(DocumentParseError, match="save the file as UTF-8"):
        decode_text(bytes(range(256)) * 4)


# --- plain text and Markdown --------------------------------------------------


def test_text_title_and_markdown_style_headings() -> None:
    document = parse_document(b"Meeting notes\n\n# Decisions\nShip it.\n## Follow-up\n", FileType.TEXT)
    assert document.file_type is FileType.TEXT
    assert document.title == "Decisions"
    assert [(h.level, h.title) for h in document.headings] == [(1, "Decisions"), (2, "Follow-up")]
    for heading in document.headings:
        assert document.text[heading.start :].startswith("#" * heading.level + " " + heading.title)


def test_text_title_is_first_short_line() -> None:
    assert parse_document("  \n会议纪要\n内容".encode("gbk"), FileType.TEXT).title == "会议纪要"
    long_line = "word " * 30
    assert parse_document(long_line.encode(), FileType.TEXT).title == ""


def test_markdown_headings_offsets_and_fences() -> None:
    document = parse_document(MARKDOWN.encode(), FileType.MARKDOWN)
    assert document.text == MARKDOWN  # the source is the text, so citation offsets are exact
    assert [(h.level, h.title) for h in document.headings] == [
        (1, "Project Wenda"),
        (2, "Install"),
        (1, "Usage Guide"),
        (2, "Details"),
        (6, "Deep"),
    ]
    prefixes = ["# Project  Wenda", "## Install ##", "Usage Guide\n===", "Details\n---", "###### Deep"]
    for heading, prefix in zip(document.headings, prefixes, strict=True):
        assert document.text[heading.start :].startswith(prefix)
    assert "# not a heading" in document.text
    assert document.title == "Project Wenda"


def test_markdown_unclosed_fence_hides_the_rest() -> None:
    document = parse_document(b"# Top\n```\n# inside\n", FileType.MARKDOWN)
    assert [h.title for h in document.headings] == ["Top"]


def test_markdown_utf16_offsets_refer_to_decoded_text() -> None:
    source = "\ufeff# 标题\n\n正文\n\n## 第二节\n"
    document = parse_document(source.encode("utf-16-le"), FileType.MARKDOWN)
    assert document.text == source.lstrip("\ufeff")
    assert [document.text[h.start :].split("\n")[0] for h in document.headings] == ["# 标题", "## 第二节"]


# --- HTML ---------------------------------------------------------------------


def test_html_keeps_the_article_and_drops_navigation() -> None:
    document = parse_document(ARTICLE_HTML.encode(), FileType.HTML)
    text = document.text
    dropped = ("SITE BANNER", "NAV LINK", "ROLE NAV", "SCRIPT", "color: red", "ASIDE", "COMMENT", "NOSCRIPT")
    for absent in (*dropped, "FORM LABEL", "FOOTER TEXT"):
        assert absent not in text
    assert "Keep documents in a dry place.\nCheck them yearly." in text
    assert "We accept PDF and DOCX." in text
    assert "def keep():\n    return  True" in text  # <pre> keeps its whitespace
    assert "Format | Size | Notes\nPDF | 10 MB |" in text
    assert "First item\nSecond item" in text
    assert document.title == "Storage Guide"
    assert text == text.strip()


def test_html_headings_are_recorded_with_offsets() -> None:
    document = parse_document(ARTICLE_HTML.encode(), FileType.HTML)
    assert document.headings == (
        Heading(start=0, level=1, title="How to store documents"),
        Heading(start=document.text.index("Formats"), level=2, title="Formats"),
    )
    for heading in document.headings:
        assert document.text[heading.start :].startswith(heading.title)
    # Headings and paragraphs are separated by blank lines.
    assert "How to store documents\n\nKeep documents" in document.text
    assert "\n\nFormats\n\nWe accept" in document.text


def test_html_without_article_uses_body_and_first_h1_as_title() -> None:
    html = "<body><nav>Menu</nav><h1>Welcome</h1><div>One</div><div>Two</div></body>"
    document = parse_document(html.encode(), FileType.HTML)
    assert document.text == "Welcome\n\nOne\nTwo"
    assert document.title == "Welcome"


def test_html_picks_the_largest_article() -> None:
    html = "<article><p>short teaser</p></article><article><p>" + "long body text " * 20 + "</p></article>"
    document = parse_document(html.encode(), FileType.HTML)
    assert "teaser" not in document.text
    assert document.text.startswith("long body text")


def test_html_meta_charset_gbk() -> None:
    html = '<html><head><meta charset="gb2312"><title>测试</title></head><body><p>你好，世界</p></body>'
    document = parse_document(html.encode("gbk"), FileType.HTML)
    assert document.text == "你好，世界"
    assert document.title == "测试"


def test_html_wrong_meta_charset_falls_back_to_detection() -> None:
    html = '<meta http-equiv="Content-Type" content="text/html; charset=utf-8"><p>' + LONG_SIMPLIFIED + "</p>"
    document = parse_document(html.encode("gb18030"), FileType.HTML)
    assert "第一条 为了规范公司的文档管理工作" in document.text


def test_html_deep_nesting_does_not_overflow_the_stack() -> None:
    html = "<div>" * 5000 + "deep text" + "</div>" * 5000
    assert "deep text" in parse_document(html.encode(), FileType.HTML).text


def test_html_with_only_navigation_has_no_text() -> None:
    with pytest.raises(DocumentParseError, match="the HTML file contains no text"):
        parse_document(b"<nav>Home | About</nav><footer>(c) 2024</footer>", FileType.HTML)


# --- DOCX ---------------------------------------------------------------------


def test_docx_paragraphs_headings_and_tables() -> None:
    document = parse_document(_docx(), FileType.DOCX)
    assert document.text == (
        "Annual Plan\n\nThis plan sets the goals for the year.\n\nBudget\n\nSpending is capped.\n\n"
        "Item | Cost\nServers | 1200\n\nRisks 风险\n\nSupply delays."
    )
    assert [(h.level, h.title) for h in document.headings] == [
        (1, "Annual Plan"),
        (1, "Budget"),
        (2, "Risks 风险"),
    ]
    for heading in document.headings:
        assert document.text[heading.start :].startswith(heading.title)
    assert document.title == "Annual Plan"


def test_docx_title_from_core_properties() -> None:
    assert parse_document(_docx(core_title="Plan 2025"), FileType.DOCX).title == "Plan 2025"


def test_damaged_docx_is_a_parse_error() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types")
        archive.writestr("word/document.xml", "<w:document><not closed")
    with pytest.raises(DocumentParseError, match=r"the Word \(DOCX\) file is damaged or not readable: "):
        parse_document(buffer.getvalue(), FileType.DOCX)


# --- PDF ----------------------------------------------------------------------


def test_pdf_text_and_title() -> None:
    document = parse_document(_text_pdf(), FileType.PDF)
    assert document == ParsedDocument(
        text=(
            "Quarterly report\nRevenue grew by twelve percent in the third quarter.\n\n"
            "Costs fell because hiring was paused until the spring."
        ),
        file_type=FileType.PDF,
        title="Q3 Report",
    )


def test_a_pdf_of_blank_pages_says_it_contains_no_text() -> None:
    with pytest.raises(DocumentParseError, match=r"contains no text: its pages are blank or drawn as shapes"):
        parse_document(_pdf([[], [], ["7"]]), FileType.PDF)


def test_password_protected_pdf() -> None:
    with pytest.raises(DocumentParseError, match="the PDF file is encrypted"):
        parse_document(_encrypted(_text_pdf(), user_password="secret"), FileType.PDF)


def test_pdf_encrypted_only_against_editing_opens_with_the_empty_password() -> None:
    document = parse_document(_encrypted(_text_pdf(), user_password=""), FileType.PDF)
    assert document.text.startswith("Quarterly report")


@pytest.mark.parametrize(
    "corrupt",
    [
        _text_pdf()[:300],
        _text_pdf()[: len(_text_pdf()) // 2],
        b"%PDF-1.7\n" + b"\x00garbage\xff" * 200,
        b"%PDF-",
    ],
)
def test_corrupt_pdf_is_a_parse_error(corrupt: bytes) -> None:
    with pytest.raises(DocumentParseError, match=r"the PDF file is damaged or not readable: .+"):
        parse_document(corrupt, FileType.PDF)


# --- shared behaviour ---------------------------------------------------------


@pytest.mark.parametrize("file_type", [FileType.TEXT, FileType.MARKDOWN, FileType.HTML])
@pytest.mark.parametrize("data", [b"", b" \n\t\r\n ", b"\x00\x00"])
def test_empty_documents_contain_no_text(file_type: FileType, data: bytes) -> None:
    with pytest.raises(DocumentParseError, match="contains no text"):
        parse_document(data, file_type)


def test_nul_characters_are_stripped() -> None:
    assert parse_document(b"ab\x00cd", FileType.TEXT).text == "abcd"


def test_unexpected_library_errors_become_parse_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(data: bytes) -> ParsedDocument:
        raise ValueError("bad xref table\nTraceback noise")

    monkeypatch.setitem(parsing._PARSERS, FileType.TEXT, explode)
    with pytest.raises(DocumentParseError) as caught:
        parse_document(b"x", FileType.TEXT)
    assert caught.value.message == "the text file is damaged or not readable: bad xref table"


def test_memory_errors_pass_through_for_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhaust(data: bytes) -> ParsedDocument:
        raise MemoryError

    monkeypatch.setitem(parsing._PARSERS, FileType.PDF, exhaust)
    with pytest.raises(MemoryError):
        parse_document(b"%PDF-", FileType.PDF)


SPHINX_PAGE = """\
=========
Handbook
=========

Intro paragraph.

Install ``wenda``
=================

Run :ref:`setup` first and see :doc:`other`.

.. code-block:: python

   print("kept as written")

.. note:: Keep the API key in the vault.

.. include:: /etc/passwd

.. raw:: html

   <script>alert(1)</script>

Upgrade
-------

Stop the worker before upgrading.

部署
====

生产环境部署前需要运维负责人审批。
"""


def test_rst_sections_from_docutils_with_offsets_into_the_source() -> None:
    document = parse_document(SPHINX_PAGE.encode(), FileType.RESTRUCTUREDTEXT)
    # The source is the text: code blocks, directives and Sphinx roles stay as written.
    assert document.text == SPHINX_PAGE and document.title == "Handbook"
    assert [(h.level, h.title) for h in document.headings] == [
        (1, "Handbook"),
        (2, "Install wenda"),
        (3, "Upgrade"),
        (2, "部署"),
    ]
    for heading in document.headings:
        line = document.text[heading.start :].split("\n", 1)[0]
        assert heading.title.split()[0] in line
    # include and raw are refused silently: nothing is read from the server, nothing passes through.
    assert "root:" not in document.text


def test_rst_without_sections_and_malformed_markup_still_parse() -> None:
    plain = parse_document(b"Just a paragraph with *unclosed emphasis.\n\n.. unknown-directive::\n", FileType.RESTRUCTUREDTEXT)
    assert plain.headings == () and plain.title.startswith("Just a paragraph")
    with pytest.raises(DocumentParseError, match="contains no text"):
        parse_document(b"   \n", FileType.RESTRUCTUREDTEXT)
