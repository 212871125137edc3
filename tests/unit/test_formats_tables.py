from __future__ import annotations

import datetime
import io
import random
import zipfile
from collections.abc import Callable
from pathlib import Path

import openpyxl
import pytest
from odf.opendocument import OpenDocumentSpreadsheet
from odf.table import Table, TableCell, TableRow
from odf.text import P

from app.rag.errors import DocumentParseError
from app.rag.types import FileType
from ingest.chunking import split_document
from ingest.formats import tables
from ingest.parsing import parse_document
from tests.parsed import checked_headings, parse_limited, text_lines

# The acceptance question, "第三季度华东区的销售额是多少？", is answered by this one line.
EAST_Q3 = "地区: 华东 | 季度: 第三季度 | 销售额（万元）: 1280"
SALES_HEADER: list[object] = ["地区", "季度", "销售额（万元）"]
SALES_ROWS = [
    ["华东", "第一季度", 1100],
    [None, "第二季度", 1210.5],
    [None, "第三季度", 1280.0],
    ["华南", "第一季度", 870],
    [None, "第三季度", 905],
]
_SHEET_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"


# --- XLSX -----------------------------------------------------------------------------------------------


def _sales_workbook() -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "销售数据"
    sheet.append(SALES_HEADER)
    for row in SALES_ROWS:
        sheet.append(row)
    # 华东 and 华南 are each typed once and merged down over their quarters, as report sheets do.
    sheet.merge_cells("A2:A4")
    sheet.merge_cells("A5:A6")
    parameters = workbook.create_sheet("参数")
    parameters.append(["名称", "税率"])
    parameters.append(["增值税", 0.13])
    parameters.sheet_state = "hidden"
    workbook.create_sheet("空白")
    workbook.properties.title = "2024年销售报表"
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _xlsx(rows: list[list[object]], *, title: str = "Sheet1") -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = title
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _with_member(data: bytes, name: str, change: Callable[[bytes], bytes]) -> bytes:
    """The archive with one member's bytes changed, everything else copied as it was."""
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            content = source.read(info)
            target.writestr(info.filename, change(content) if info.filename == name else content)
    return buffer.getvalue()


def test_xlsx_rows_carry_their_column_names_and_merged_cells_fill_down() -> None:
    document = parse_document(_sales_workbook(), FileType.XLSX)

    assert checked_headings(document) == [(1, "销售数据"), (1, "参数 (hidden)")]
    assert document.title == "2024年销售报表"
    assert EAST_Q3 in text_lines(document)
    assert text_lines(document)[2:7] == [
        "地区: 华东 | 季度: 第一季度 | 销售额（万元）: 1100",
        "地区: 华东 | 季度: 第二季度 | 销售额（万元）: 1210.5",
        EAST_Q3,
        "地区: 华南 | 季度: 第一季度 | 销售额（万元）: 870",
        "地区: 华南 | 季度: 第三季度 | 销售额（万元）: 905",
    ]
    assert "名称: 增值税 | 税率: 0.13" in text_lines(document)
    # The empty sheet opens no section.
    assert "空白" not in document.text


def test_xlsx_values_print_as_people_write_them() -> None:
    data = _xlsx(
        [
            ["日期", "金额", None, "完成", "说明"],
            [datetime.date(2024, 9, 30), 0.1 + 0.2, "无表头", True, "第一行\n第二行"],
            [datetime.datetime(2024, 9, 30, 14, 30), 12_345_678.0, None, False, None],
        ]
    )

    lines = text_lines(parse_document(data, FileType.XLSX))

    assert "日期: 2024-09-30 | 金额: 0.3 | C: 无表头 | 完成: TRUE | 说明: 第一行 第二行" in lines
    assert "日期: 2024-09-30 14:30 | 金额: 12345678 | 完成: FALSE" in lines


def test_xlsx_formulas_read_as_their_last_calculated_values() -> None:
    data = _xlsx([["项目", "金额"], ["甲", 100], ["乙", 200], ["合计", "=SUM(B2:B3)"]])
    # openpyxl writes no cached result; Excel stores one beside the formula, as here.
    with_cached = _with_member(
        data,
        "xl/worksheets/sheet1.xml",
        lambda xml: xml.replace(b"<f>SUM(B2:B3)</f><v></v>", b"<f>SUM(B2:B3)</f><v>300</v>"),
    )
    assert with_cached != data

    assert "项目: 合计 | 金额: 300" in text_lines(parse_document(with_cached, FileType.XLSX))
    # Never calculated: the cell is empty, not the formula's source.
    assert "项目: 合计" in text_lines(parse_document(data, FileType.XLSX))


def test_xlsx_chunks_split_between_rows_never_inside_one() -> None:
    rows: list[list[object]] = [["编号", "产品名称", "负责人", "备注"]]
    rows += [[n, f"产品{n}号", f"员工{n % 7}", "按时交付，质量合格"] for n in range(1, 301)]
    document = parse_document(_xlsx(rows, title="产品清单"), FileType.XLSX)
    row_lines = {line for line in text_lines(document) if line.startswith("编号: ")}
    assert len(row_lines) == 300

    chunks = split_document(document, count_tokens=len, chunk_tokens=400, overlap_tokens=0)

    assert len(chunks) > 10
    for chunk in chunks:
        assert chunk.section == "产品清单"
        assert all(line in row_lines or line == "产品清单" for line in chunk.text.split("\n"))


def test_openpyxl_reads_sheets_through_defusedxml() -> None:
    # OPENPYXL_DEFUSEDXML=False, or defusedxml missing, would silently give openpyxl the stdlib parser.
    from defusedxml import ElementTree
    from openpyxl.xml import functions

    assert functions.iterparse is ElementTree.iterparse


def test_xlsx_sheet_with_billion_laughs_dtd_is_refused() -> None:
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    )
    data = _with_member(
        _xlsx([["标题"], ["正文"]]),
        "xl/worksheets/sheet1.xml",
        lambda xml: _declare(xml, f"<!DOCTYPE worksheet [{entities}]>").replace(b"<t>", b"<t>&lol9;", 1),
    )

    with pytest.raises(DocumentParseError, match="declares XML entities"):
        parse_limited(data, FileType.XLSX)


def test_xlsx_workbook_part_with_billion_laughs_is_refused() -> None:
    # openpyxl reads this part with lxml, entities unexpanded in text; libxml2 refuses the expansion in an
    # attribute (the sheet's name) once it grows past its amplification limit.
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    )
    data = _with_member(
        _xlsx([["标题"], ["正文"]]),
        "xl/workbook.xml",
        lambda xml: _declare(xml, f"<!DOCTYPE workbook [{entities}]>").replace(
            b'name="Sheet1"', b'name="&lol9;"'
        ),
    )

    with pytest.raises(DocumentParseError):
        parse_limited(data, FileType.XLSX)


def test_xlsx_external_entity_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-MARKER-7f3a")
    doctype = f'<!DOCTYPE worksheet [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'
    data = _with_member(
        _xlsx([["标题"], ["正文"]]),
        "xl/worksheets/sheet1.xml",
        lambda xml: _declare(xml, doctype).replace(b"<t>", b"<t>&xxe;", 1),
    )

    with pytest.raises(DocumentParseError, match="declares XML entities") as raised:
        parse_limited(data, FileType.XLSX)
    assert "SECRET-MARKER" not in raised.value.message


def _declare(xml: bytes, doctype: str) -> bytes:
    # openpyxl writes sheets without an XML declaration: the DOCTYPE goes first.
    return doctype.encode() + xml


def test_xlsx_zip_bomb_is_refused_from_its_directory() -> None:
    padding = b" " * (64 * 1024 * 1024)
    data = _with_member(
        _xlsx([["标题"], ["正文"]]),
        "xl/worksheets/sheet1.xml",
        lambda xml: xml.replace(b"<sheetData>", b"<sheetData>" + padding, 1),
    )
    assert len(data) < 1024 * 1024

    with pytest.raises(DocumentParseError, match="zip bomb"):
        parse_limited(data, FileType.XLSX)


def test_xlsx_merged_range_cannot_fill_past_the_cell_budget() -> None:
    # Two cells, and one merge that spreads the first over 100 rows of 16,384 columns.
    def spread(xml: bytes) -> bytes:
        xml = xml.replace(b"</sheetData>", b'<row r="100"><c r="A100" t="n"><v>1</v></c></row></sheetData>')
        return xml.replace(
            b"</sheetData>", b'</sheetData><mergeCells count="1"><mergeCell ref="A1:XFD100"/></mergeCells>'
        )

    data = _with_member(_xlsx([["满"]]), "xl/worksheets/sheet1.xml", spread)

    with pytest.raises(DocumentParseError, match="more than 1,000,000 filled cells"):
        parse_document(data, FileType.XLSX)


@pytest.mark.slow
def test_xlsx_over_the_cell_budget_fails_while_streaming() -> None:
    data = _wide_sheet(rows=50_000, columns=200)

    with pytest.raises(DocumentParseError, match="more than 1,000,000 filled cells"):
        parse_limited(data, FileType.XLSX)


def _wide_sheet(*, rows: int, columns: int) -> bytes:
    """A real workbook whose sheet is ``rows`` x ``columns`` numbers, written in ~2 s.

    The sheet XML is written directly, without the optional cell references (``r="GR50000"``), which keeps it
    under the inflated-size limit of ``open_zip``: openpyxl's own 10 million cells would be refused there, before
    any row is read, and this test is about the budget met while streaming."""
    template = zipfile.ZipFile(io.BytesIO(_xlsx([["x"]])))
    generator = random.Random(17)
    # Distinct rows far enough apart that deflate cannot shrink the sheet past the zip-bomb ratio.
    distinct = [
        "<row>" + "".join(f"<c><v>{generator.randrange(1000)}</v></c>" for _ in range(columns)) + "</row>"
        for _ in range(97)
    ]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as target:
        for info in template.infolist():
            if info.filename != "xl/worksheets/sheet1.xml":
                target.writestr(info.filename, template.read(info))
                continue
            with target.open(info.filename, "w", force_zip64=True) as sheet:
                sheet.write(
                    f'<worksheet xmlns="{_SHEET_NS}"><dimension ref="A1:GR{rows}"/><sheetData>'.encode()
                )
                for index in range(rows):
                    sheet.write(distinct[index % len(distinct)].encode())
                sheet.write(b"</sheetData></worksheet>")
    return buffer.getvalue()


# --- CSV and TSV ----------------------------------------------------------------------------------------


def test_csv_in_gbk_reads_each_row_with_its_column_names() -> None:
    csv_text = "地区,季度,销售额（万元）\n华东,第一季度,1100\n华东,第三季度,1280\n华南,第三季度,905\n"

    document = parse_document(csv_text.encode("gbk"), FileType.CSV)

    assert document.headings == ()
    assert document.text == (
        "地区: 华东 | 季度: 第一季度 | 销售额（万元）: 1100\n"
        f"{EAST_Q3}\n"
        "地区: 华南 | 季度: 第三季度 | 销售额（万元）: 905"
    )


def test_csv_separated_by_semicolons_is_sniffed() -> None:
    csv_text = "地区;季度;销售额（万元）\n华东;第三季度;1280\n华南;第三季度;905,5\n"

    lines = text_lines(parse_document(csv_text.encode(), FileType.CSV))

    assert lines == [EAST_Q3, "地区: 华南 | 季度: 第三季度 | 销售额（万元）: 905,5"]


def test_csv_quoted_fields_blank_lines_and_ragged_rows() -> None:
    csv_text = '\ufeff\n名称,说明\n"北京,上海","第一行\n第二行"\n\n,只有说明\n多出,一列,额外\n'

    lines = text_lines(parse_document(csv_text.encode(), FileType.CSV))

    assert lines == [
        "名称: 北京,上海 | 说明: 第一行 第二行",
        "说明: 只有说明",
        "名称: 多出 | 说明: 一列 | C: 额外",
    ]


def test_csv_of_one_row_keeps_its_cells() -> None:
    assert parse_document("仅有,一行\n".encode(), FileType.CSV).text == "仅有 | 一行"


def test_csv_with_an_unclosed_quote_says_so() -> None:
    data = ('名称,说明\n"未闭合,' + "很长的文字" * 30_000).encode()

    with pytest.raises(DocumentParseError, match="never closed"):
        parse_document(data, FileType.CSV)


def test_tsv_reads_tabs() -> None:
    tsv_text = "地区\t季度\t销售额（万元）\n华东\t第三季度\t1280\n"

    assert parse_document(tsv_text.encode(), FileType.TSV).text == EAST_Q3


def test_text_over_the_budget_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "MAX_TEXT_CHARS", 100)
    csv_text = "地区,季度,销售额（万元）\n" + "华东,第三季度,1280\n" * 10

    with pytest.raises(DocumentParseError, match="longer than 100 characters"):
        parse_document(csv_text.encode(), FileType.CSV)


# --- ODS ------------------------------------------------------------------------------------------------


def _ods(sheets: dict[str, list[list[object]]]) -> bytes:
    document = OpenDocumentSpreadsheet()
    for name, rows in sheets.items():
        table = Table(name=name)
        for row in rows:
            table_row = TableRow()
            for value in row:
                table_row.addElement(_ods_cell(value))
            table.addElement(table_row)
        document.spreadsheet.addElement(table)
    buffer = io.BytesIO()
    document.write(buffer)
    return buffer.getvalue()


def _ods_cell(value: object) -> TableCell:
    if value is None:
        return TableCell()
    if isinstance(value, datetime.date):
        cell = TableCell(valuetype="date", datevalue=value.isoformat())
    elif isinstance(value, int | float):
        cell = TableCell(valuetype="float", value=value)
    else:
        cell = TableCell(valuetype="string")
    cell.addElement(P(text=str(value)))
    return cell


def test_ods_sheets_become_sections_of_named_rows() -> None:
    data = _ods(
        {
            "销售数据": [SALES_HEADER, ["华东", "第一季度", 1100], ["华东", "第三季度", 1280.0]],
            "说明": [["更新日期", "负责人"], [datetime.date(2024, 10, 8), "王芳"]],
        }
    )

    document = parse_document(data, FileType.ODS)

    assert checked_headings(document) == [(1, "销售数据"), (1, "说明")]
    assert EAST_Q3 in text_lines(document)
    assert "更新日期: 2024-10-08 | 负责人: 王芳" in text_lines(document)


def _ods_with_rows(rows_xml: str) -> bytes:
    """An ODS package whose one sheet is ``rows_xml``, written by hand: odfpy would write every repeat."""
    content = (
        '<?xml version="1.0" encoding="UTF-8"?><office:document-content '
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
        f'<office:body><office:spreadsheet><table:table table:name="表">{rows_xml}</table:table>'
        "</office:spreadsheet></office:body></office:document-content>"
    )
    template = zipfile.ZipFile(io.BytesIO(_ods({"表": [["x"]]})))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in template.infolist():
            target.writestr(info, content if info.filename == "content.xml" else template.read(info))
    return buffer.getvalue()


_ODS_CELL = '<table:table-cell office:value-type="string"{}><text:p>满</text:p></table:table-cell>'


def test_ods_repeating_one_cell_a_billion_times_is_refused_before_calamine_allocates() -> None:
    repeated = _ODS_CELL.format(' table:number-columns-repeated="1000"')
    data = _ods_with_rows(
        f'<table:table-row table:number-rows-repeated="1000000">{repeated}</table:table-row>'
    )
    assert len(data) < 2048

    with pytest.raises(DocumentParseError, match="more than 1,000,000 filled cells"):
        parse_limited(data, FileType.ODS)


def test_ods_two_cells_a_million_rows_apart_are_refused_for_the_blank_grid() -> None:
    far_cell = '<table:table-cell table:number-columns-repeated="999"/>' + _ODS_CELL.format("")
    data = _ods_with_rows(
        f"<table:table-row>{_ODS_CELL.format('')}</table:table-row>"
        '<table:table-row table:number-rows-repeated="1000000"><table:table-cell/></table:table-row>'
        f"<table:table-row>{far_cell}</table:table-row>"
    )

    with pytest.raises(DocumentParseError, match="blank ones included"):
        parse_limited(data, FileType.ODS)


# --- XLS ------------------------------------------------------------------------------------------------


def _xls() -> bytes:
    # The only writer of real XLS files on PyPI; a test tool, in the dev extras.
    xlwt = pytest.importorskip("xlwt")
    workbook = xlwt.Workbook(encoding="utf-8")
    sheet = workbook.add_sheet("销售数据")
    for column, name in enumerate(SALES_HEADER):
        sheet.write(0, column, name)
    sheet.write_merge(1, 3, 0, 0, "华东")
    for row, (quarter, amount) in enumerate(
        (("第一季度", 1100), ("第二季度", 1210.5), ("第三季度", 1280.0)), 1
    ):
        sheet.write(row, 1, quarter)
        sheet.write(row, 2, amount)
    sheet.write(4, 0, "华南")
    sheet.write(4, 1, "第三季度")
    sheet.write(4, 2, datetime.date(2024, 9, 30), xlwt.easyxf(num_format_str="YYYY-MM-DD"))
    notes = workbook.add_sheet("备注")
    notes.write(0, 0, "内部")
    notes.write(1, 0, "不对外")
    notes.visibility = 1
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def test_xls_rows_carry_column_names_and_merged_cells_fill_down() -> None:
    document = parse_document(_xls(), FileType.XLS)

    assert checked_headings(document) == [(1, "销售数据"), (1, "备注 (hidden)")]
    assert text_lines(document)[2:6] == [
        "地区: 华东 | 季度: 第一季度 | 销售额（万元）: 1100",
        "地区: 华东 | 季度: 第二季度 | 销售额（万元）: 1210.5",
        EAST_Q3,
        "地区: 华南 | 季度: 第三季度 | 销售额（万元）: 2024-09-30",
    ]
    assert "内部: 不对外" in text_lines(document)
