"""One small document per format we read, each holding a unique fact in a known section.

Generated with the libraries that write each format (and LibreOffice's files from tests/fixtures/legacy), so
the corpus needs no third-party files. ``CORPUS`` lists, per file, the question that finds its fact, a phrase
of the fact, and the section path its chunk must carry.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass(frozen=True)
class Sample:
    filename: str
    make: Callable[[], bytes]
    question: str
    fact: str
    section: str


def _markdown() -> bytes:
    return "# 部署指南\n\n## 数据库\n\n生产环境的数据库连接池上限设为一百二十八个连接。\n\n## 缓存\n\n缓存过期时间为十分钟。\n".encode()


def _mdx() -> bytes:
    return (
        b"import { Callout } from '../components'\n\n# Release guide\n\n## Rollback\n\n"
        b"<Callout>Careful</Callout>\n\nA rollback restores the previous build from the artifact bucket named "
        b"ember-falcon.\n"
    )


def _rst() -> bytes:
    return (
        b"Operations\n==========\n\nBackups\n-------\n\nNightly backups are kept for thirty-five days in the "
        b"vault called granite-otter.\n\n.. note::\n\n   Restore drills run monthly.\n"
    )


def _asciidoc() -> bytes:
    return (
        "= 员工手册\n\n== 休假\n\n年假满五年的员工每年享有十五天带薪年假。\n\n----\n== 不是标题\n----\n\n== 报销\n\n"
        "出差报销需在三十天内提交。\n"
    ).encode()


def _org() -> bytes:
    return (
        b"#+TITLE: Lab notebook\n\n* Experiments\n** Calibration\nThe spectrometer calibration uses the "
        b"reference lamp labelled quartz-heron.\n* Notes\nNothing else.\n"
    )


def _latex() -> bytes:
    return (
        b"\\documentclass{article}\n\\title{Thermal study}\n\\begin{document}\n\\maketitle\n\\section{Method}\n"
        b"\\subsection{Sensors}\nThe probe array samples the coolant temperature every \\textbf{forty} "
        b"milliseconds.\n\\section{Results}\nStable.\n\\end{document}\n"
    )


def _text() -> bytes:
    return "机房值班电话为零二一五五五八七六四三，夜间由安保中心转接。\n".encode("gb18030")


def _source_code() -> bytes:
    return b'"""Rate limiter."""\n\n# The token bucket refills at seventy-three tokens per second.\nRATE = 73\n'


def _html() -> bytes:
    return (
        b"<html><body><nav>Home</nav><article><h1>Onboarding</h1><h2>Badges</h2><p>New staff collect their "
        b"badge from the front desk on level nine of the Crimson Tower.</p></article></body></html>"
    )


def _docx() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("采购制度", 1)
    document.add_heading("审批权限", 2)
    document.add_paragraph("单笔金额超过五十万元的采购须由总经理办公会审批。")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _odt() -> bytes:
    from odf.opendocument import OpenDocumentText
    from odf.text import H, P

    document = OpenDocumentText()
    document.text.addElement(H(outlinelevel=1, text="Travel policy"))
    document.text.addElement(H(outlinelevel=2, text="Per diem"))
    document.text.addElement(P(text="The daily meal allowance in Osaka is eleven thousand yen."))
    buffer = io.BytesIO()
    document.write(buffer)
    return buffer.getvalue()


def _pdf() -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, pagesize=A4)
    page.setFont("STSong-Light", 12)
    lines = ["安全规定：实验室的废液必须在每周五下午", "交由环保部门统一回收处理，不得倒入下水道。"]
    for index, line in enumerate(lines):
        page.drawString(72, 760 - 16 * index, line)
    page.showPage()
    page.save()
    return buffer.getvalue()


def _pptx() -> bytes:
    from pptx import Presentation

    deck = Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[0])
    first.shapes.title.text = "Quarterly review"
    second = deck.slides.add_slide(deck.slide_layouts[1])
    second.shapes.title.text = "Hiring"
    second.placeholders[1].text = "Headcount grows by fourteen engineers."
    second.notes_slide.notes_text_frame.text = "The new office opens in Chengdu's Tianfu district."
    buffer = io.BytesIO()
    deck.save(buffer)
    return buffer.getvalue()


def _odp() -> bytes:
    from odf.draw import Frame, Page, TextBox
    from odf.opendocument import OpenDocumentPresentation
    from odf.style import MasterPage, PageLayout
    from odf.text import P

    deck = OpenDocumentPresentation()
    layout = PageLayout(name="layout")
    deck.automaticstyles.addElement(layout)
    master = MasterPage(name="master", pagelayoutname=layout)
    deck.masterstyles.addElement(master)
    slide = Page(name="供应链", masterpagename=master)
    deck.presentation.addElement(slide)
    frame = Frame(width="20cm", height="5cm", x="1cm", y="1cm")
    slide.addElement(frame)
    box = TextBox()
    frame.addElement(box)
    box.addElement(P(text="备用供应商的交货周期为二十一天。"))
    buffer = io.BytesIO()
    deck.write(buffer)
    return buffer.getvalue()


SALES = [["地区", "季度", "销售额（万元）"], ["华北", "第三季度", 1135], ["华东", "第三季度", 1280], ["华东", "第二季度", 990]]


def _xlsx() -> bytes:
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "销售"
    for row in SALES:
        sheet.append(row)
    other = workbook.create_sheet("人员")
    other.append(["部门", "人数"])
    other.append(["研发", 42])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _ods() -> bytes:
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    document = OpenDocumentSpreadsheet()
    table = Table(name="Inventory")
    for values in (["Part", "Warehouse", "Stock"], ["Valve V-220", "Rotterdam", "615"]):
        row = TableRow()
        for value in values:
            cell = TableCell(valuetype="string")
            cell.addElement(P(text=value))
            row.addElement(cell)
        table.addElement(row)
    document.spreadsheet.addElement(table)
    buffer = io.BytesIO()
    document.write(buffer)
    return buffer.getvalue()


def _delimited(delimiter: str) -> Callable[[], bytes]:
    def make() -> bytes:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=delimiter)
        writer.writerows([["城市", "门店数", "店长"], ["苏州", "7", "王蕾"], ["无锡", "3", "陈刚"]])
        return buffer.getvalue().encode()

    return make


def _json() -> bytes:
    config = {"service": {"name": "billing", "retry": {"max_attempts": 6, "backoff": "exponential"}}}
    return json.dumps(config, ensure_ascii=False, indent=2).encode()


def _jsonl() -> bytes:
    records = [{"ticket": "T-1", "summary": "打印机卡纸"}, {"ticket": "T-2", "summary": "会议室投影仪无法连接无线网络"}]
    return "\n".join(json.dumps(record, ensure_ascii=False) for record in records).encode()


def _yaml() -> bytes:
    return b"deployment:\n  region: eu-west\n  replicas: 9\nalerts:\n  pager: the on-call rota named heron-team\n"


def _xml() -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<catalog><book id="b7"><title>河流志</title>'
        "<shelf>馆藏位置在三楼东区第十二排书架</shelf></book></catalog>"
    ).encode()


def _epub() -> bytes:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("corpus-1")
    book.set_title("The Lighthouse Keeper")
    book.set_language("en")
    chapter = epub.EpubHtml(title="Chapter 2", file_name="chap2.xhtml", lang="en")
    chapter.content = (
        "<html><body><h1>Chapter 2: The Storm</h1><p>The lamp was fuelled with whale oil until 1911.</p>"
        "</body></html>"
    )
    book.add_item(chapter)
    book.toc = [chapter]
    book.spine = [chapter]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    buffer = io.BytesIO()
    epub.write_epub(buffer, book)
    return buffer.getvalue()


def _eml() -> bytes:
    message = EmailMessage()
    message["From"] = "李娜 <lina@example.com>"
    message["To"] = "team@example.com"
    message["Subject"] = "机房搬迁通知"
    message.set_content("各位同事：新机房位于园区七号楼地下一层，搬迁定于周六进行。")
    return message.as_bytes()


def _png() -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (1400, 200), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=40)
    draw.text((40, 70), "The freight elevator is serviced every Tuesday.", fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _fixture(name: str) -> Callable[[], bytes]:
    return lambda: (FIXTURES / name).read_bytes()


CORPUS: tuple[Sample, ...] = (
    Sample("guide.md", _markdown, "数据库连接池上限是多少", "连接池上限设为一百二十八个连接", "部署指南 > 数据库"),
    Sample("release.mdx", _mdx, "which bucket does a rollback restore from", "ember-falcon", "Release guide > Rollback"),
    Sample("ops.rst", _rst, "how long are nightly backups kept", "thirty-five days", "Operations > Backups"),
    Sample("handbook.adoc", _asciidoc, "满五年的员工有多少天年假", "十五天带薪年假", "休假"),
    Sample("lab.org", _org, "which reference lamp is used for calibration", "quartz-heron", "Experiments > Calibration"),
    Sample("study.tex", _latex, "how often does the probe array sample the coolant temperature", "milliseconds", "Method > Sensors"),
    Sample("duty.txt", _text, "机房值班电话是多少", "零二一五五五八七六四三", ""),
    Sample("limiter.py", _source_code, "token bucket refill rate", "seventy-three tokens per second", ""),
    Sample("onboarding.html", _html, "where do new staff collect their badge", "Crimson Tower", "Onboarding > Badges"),
    Sample("purchasing.docx", _docx, "多少金额的采购要总经理办公会审批", "总经理办公会审批", "采购制度 > 审批权限"),
    Sample("travel.odt", _odt, "daily meal allowance in Osaka", "eleven thousand yen", "Travel policy > Per diem"),
    Sample("safety.pdf", _pdf, "实验室废液什么时候回收", "交由环保部门统一回收处理", ""),
    Sample("review.pptx", _pptx, "where does the new office open", "Tianfu district", "Slide 2: Hiring"),
    Sample("supply.odp", _odp, "备用供应商的交货周期", "二十一天", "Slide 1: 供应链"),
    Sample("sales.xlsx", _xlsx, "第三季度华东区的销售额是多少？", "1280", "销售"),
    Sample("inventory.ods", _ods, "how much stock of valve V-220 in Rotterdam", "615", "Inventory"),
    Sample("stores.csv", _delimited(","), "苏州有几家门店，店长是谁", "王蕾", ""),
    Sample("stores.tsv", _delimited("\t"), "无锡的店长是谁", "陈刚", ""),
    Sample("billing.json", _json, "billing service retry max attempts", "max_attempts", "service"),
    Sample("tickets.jsonl", _jsonl, "投影仪无法连接无线网络的工单", "会议室投影仪无法连接无线网络", "record 2"),
    Sample("deploy.yaml", _yaml, "which on-call rota gets paged", "heron-team", "alerts"),
    Sample("catalog.xml", _xml, "河流志的馆藏位置", "三楼东区第十二排书架", "book id=b7"),
    Sample("lighthouse.epub", _epub, "what fuelled the lamp until 1911", "whale oil", "Chapter 2: The Storm"),
    Sample("move.eml", _eml, "新机房在哪里", "七号楼地下一层", "机房搬迁通知"),
    Sample("notice.png", _png, "when is the freight elevator serviced", "Tuesday", ""),
    Sample("minutes.doc", _fixture("legacy/minutes.doc"), "第三季度差旅预算是多少", "四万二千元", "季度会议纪要 > 预算"),
    Sample("budget.xls", _fixture("legacy/budget.xls"), "how much is the Lisbon office rent budget", "48000", "Budget"),
    Sample("roadmap.ppt", _fixture("legacy/roadmap.ppt"), "第二阶段什么时候上线", "十一月八日", "Slide 1: 产品路线图"),
)
