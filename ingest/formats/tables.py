"""Tables: CSV, TSV and spreadsheets, each sheet a section, each row with its column names.

A sheet becomes a level-1 heading (its name; CSV and TSV have one table and no heading) and one block of
lines, one line per row: ``地区: 华东 | 季度: 第三季度 | 销售额（万元）: 1280``. The first non-empty row
names the columns; a column without a name is called by its letter (``C``). Every line carries its column
names, so a chunk boundary, which the chunker puts between lines, never leaves a row without them. Merged
cells (XLSX and XLS) give their value to every cell they cover, so a region merged down a column still
names each row's region. Hidden sheets are read too, and their heading says "(hidden)": hiding a sheet is a
view setting, not access control, and reference data (price lists, codes) often lives there. Formulas are
read as the values Excel last calculated; a formula never calculated (a file written by a script) is empty.

Work is bounded while rows stream in, before a large sheet is held in memory: at most ``MAX_FILLED_CELLS``
non-empty cells, ``MAX_GRID_CELLS`` positions scanned (blank cells included, so a sheet whose last cell is
far from its first cannot make us walk millions of blanks) and ``MAX_TEXT_CHARS`` of text per file.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import IO

import openpyxl
import python_calamine
from defusedxml import DefusedXmlException
from lxml import etree
from openpyxl.utils import get_column_letter, range_boundaries

from app.rag.errors import DocumentParseError
from app.rag.filetypes import FORMAT_OF
from app.rag.types import FileType, ParsedDocument
from ingest.formats.archives import open_zip
from ingest.formats.builder import DocumentBuilder, one_line
from ingest.parsing import decode_text

# A 10,000-row sheet of 100 columns. At ~20 characters a cell with its column name that is ~20 million
# characters, the same as MAX_TEXT_CHARS; a file over it is a data export rather than a document to ask about.
MAX_FILLED_CELLS = 1_000_000
# About 10,000 pages of prose, ~15,000 chunks: what the embedder indexes in minutes on a CPU, and a few
# hundred MiB in the parse child (the text, then its JSON) against its 2 GiB limit.
MAX_TEXT_CHARS = 20_000_000
# Blank cells cost a scan each, in the libraries and in ours; ten blanks per filled cell is already a sheet
# that is mostly empty space, and ten million of them take seconds.
MAX_GRID_CELLS = 10 * MAX_FILLED_CELLS
# Report-style sheets merge a few cells per row; this many ranges in one sheet is no report.
MAX_MERGED_RANGES = 200_000

_ROW_SEPARATOR = " | "
# Enough lines to tell the delimiter of a file whose first line does not have the expected one.
_SNIFF_CHARS = 16_384
_SNIFF_DELIMITERS = ",;\t|"
# Larger floats print in exponent form rather than as a long run of digits that were never stored.
_LARGEST_PLAIN_INTEGER = 1e15
_LAST_LETTERED_COLUMN = 18_278
# A marker found in the raw bytes before a sheet is parsed a second time for its merged ranges.
_MERGE_MARKER = b"mergeCell"

_ODF_TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
_ODF_OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
_ODS_TABLE = f"{{{_ODF_TABLE}}}table"
_ODS_ROW = f"{{{_ODF_TABLE}}}table-row"
_ODS_ROWS_REPEATED = f"{{{_ODF_TABLE}}}number-rows-repeated"
_ODS_COLUMNS_REPEATED = f"{{{_ODF_TABLE}}}number-columns-repeated"
_ODS_VALUE_TYPE = f"{{{_ODF_OFFICE}}}value-type"


def parse_csv(data: bytes) -> ParsedDocument:
    return _parse_delimited(data, FileType.CSV, ",")


def parse_tsv(data: bytes) -> ParsedDocument:
    return _parse_delimited(data, FileType.TSV, "\t")


def parse_xlsx(data: bytes) -> ParsedDocument:
    writer = _TableWriter(FileType.XLSX)
    with open_zip(data, writer.label) as archive:
        try:
            # openpyxl parses sheets and shared strings with defusedxml (entities refused) when it is
            # installed, and the rest with lxml without entity expansion; read-only mode streams each sheet.
            with contextlib.closing(
                openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True, keep_links=False)
            ) as workbook:
                for sheet in workbook.worksheets:
                    # The library's own record of where the sheet's XML lives: its merged ranges are read
                    # from there, since the streaming reader does not report them.
                    merged = _xlsx_merged_ranges(archive, sheet._worksheet_path, writer.label)
                    # The declared dimensions may claim a million rows; without them rows are only as wide as
                    # their own last cell and the sheet ends at its last row.
                    sheet.reset_dimensions()
                    rows = ([_cell_text(value) for value in row] for row in sheet.iter_rows(values_only=True))
                    writer.add_table(
                        _fill_merged(rows, merged), name=_sheet_name(sheet.title, sheet.sheet_state)
                    )
                title = workbook.properties.title or ""
        # DefusedXmlException is a ValueError, which openpyxl wraps in one of its own while it opens a workbook.
        except ValueError as exc:
            if not isinstance(exc, DefusedXmlException) and not isinstance(
                exc.__cause__, DefusedXmlException
            ):
                raise
            raise DocumentParseError(
                f"the {writer.label} file declares XML entities, which we do not read: they are used to attack "
                "parsers; save the file again from Excel or LibreOffice"
            ) from exc
    return writer.build(title)


def parse_ods(data: bytes) -> ParsedDocument:
    writer = _TableWriter(FileType.ODS)
    with open_zip(data, writer.label) as archive:
        _check_ods_extent(archive, writer.label)
    return _parse_with_calamine(data, writer)


def parse_xls(data: bytes) -> ParsedDocument:
    # No container to check first. calamine reads every sheet into memory as it opens the file, 32 bytes a
    # cell from the first filled one to the last (at most 65,536 x 256 a sheet): a small file can claim more
    # than the parse child's memory limit, and the child then aborts, which parse_in_subprocess reports.
    return _parse_with_calamine(data, _TableWriter(FileType.XLS))


# --- the layout shared by every format ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _MergedRange:
    """A merged region in 1-based rows and columns, both ends included."""

    top: int
    left: int
    bottom: int
    right: int


class _CellBudget:
    """Counts cells as they stream in and refuses a file the moment it goes over a limit."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._filled = 0
        self._grid = 0

    def add(self, *, filled: int, grid: int) -> None:
        self._filled += filled
        self._grid += grid
        if self._filled > MAX_FILLED_CELLS:
            raise DocumentParseError(
                f"the {self._label} file has more than {MAX_FILLED_CELLS:,} filled cells, the limit for one "
                "document; split it into smaller files"
            )
        if self._grid > MAX_GRID_CELLS:
            raise DocumentParseError(
                f"the {self._label} file's sheets span more than {MAX_GRID_CELLS:,} cells, blank ones included, "
                "the limit for one document; delete the unused rows and columns or split the file"
            )


class _TableWriter:
    """Writes tables as sections of row lines, within one document's budgets."""

    def __init__(self, file_type: FileType) -> None:
        self.label = FORMAT_OF[file_type].label
        self._builder = DocumentBuilder(file_type)
        self._budget = _CellBudget(self.label)

    def add_table(self, rows: Iterable[Sequence[str]], *, name: str | None = None) -> None:
        """Write ``rows`` (cell texts, "" for an empty cell) under a heading ``name``, if given."""
        header: Sequence[str] = ()
        column_names: list[str] = []
        lines: list[str] = []
        text_chars = self._builder.length
        for row in rows:
            filled = [(column, value) for column, value in enumerate(row, start=1) if value]
            self._budget.add(filled=len(filled), grid=max(len(row), 1))
            if not filled:
                continue
            if not header:
                header = row
                column_names = [value or _column_letter(column) for column, value in enumerate(row, start=1)]
                continue
            line = _ROW_SEPARATOR.join(
                f"{column_names[column - 1] if column <= len(column_names) else _column_letter(column)}: {value}"
                for column, value in filled
            )
            text_chars += len(line) + 1
            if text_chars > MAX_TEXT_CHARS:
                raise DocumentParseError(
                    f"the {self.label} file's text is longer than {MAX_TEXT_CHARS:,} characters, the limit for "
                    "one document; split it into smaller files"
                )
            lines.append(line)
        if not header:
            return
        if not lines:
            # A table of one row has nothing to name; its cells are the text.
            lines.append(_ROW_SEPARATOR.join(value for value in header if value))
        if name is not None:
            self._builder.heading(1, name)
        self._builder.block("\n".join(lines))

    def build(self, title: str) -> ParsedDocument:
        document = self._builder.build(title)
        # Not the first sheet's name, the builder's fallback: every passage is embedded with the title in front.
        return document if title else replace(document, title="")


def _cell_text(value: object) -> str:
    """A cell's value as people write it: 1280 not 1280.0, dates as ISO dates, text on one line."""
    # Blank cells, the most common value of all, first.
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        return one_line(value)
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < _LARGEST_PLAIN_INTEGER:
            return str(int(value))
        # 15 significant digits: what a double holds, without the binary noise of 0.1 + 0.2.
        return f"{value:.15g}"
    if isinstance(value, datetime.datetime):
        if value.time() == datetime.time():
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="seconds" if value.second else "minutes")
    if isinstance(value, datetime.time):
        return value.isoformat(timespec="seconds" if value.second else "minutes")
    if isinstance(value, datetime.timedelta):
        sign = "-" if value < datetime.timedelta() else ""
        minutes, seconds = divmod(round(abs(value.total_seconds())), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{sign}{hours}:{minutes:02}:{seconds:02}"
    if isinstance(value, datetime.date):
        return value.isoformat()
    return one_line(str(value))


def _column_letter(column: int) -> str:
    # openpyxl names columns up to ZZZ; only a CSV row can be wider.
    return get_column_letter(column) if column <= _LAST_LETTERED_COLUMN else f"#{column}"


def _sheet_name(name: str, state: str) -> str:
    return name if state == "visible" else f"{name} (hidden)"


def _fill_merged(rows: Iterable[Sequence[str]], merged: Sequence[_MergedRange]) -> Iterator[Sequence[str]]:
    """``rows`` (every row from row 1 on, blank ones included) with each merged range's value in all its cells."""
    pending = sorted(merged, key=lambda region: region.top, reverse=True)
    active: list[tuple[_MergedRange, str]] = []
    for row_number, row in enumerate(rows, start=1):
        while pending and pending[-1].top <= row_number:
            region = pending.pop()
            value = row[region.left - 1] if region.left <= len(row) else ""
            if value:
                active.append((region, value))
        active = [(region, value) for region, value in active if region.bottom >= row_number]
        if not active:
            yield row
            continue
        filled = list(row)
        for region, value in active:
            if len(filled) < region.right:
                filled.extend([""] * (region.right - len(filled)))
            for index in range(region.left - 1, region.right):
                filled[index] = filled[index] or value
        yield filled


# --- CSV and TSV ----------------------------------------------------------------------------------------


def _parse_delimited(data: bytes, file_type: FileType, delimiter: str) -> ParsedDocument:
    # ingest.parsing imports this module to dispatch to it, so its decoder is imported when first needed.
    text = decode_text(data)
    writer = _TableWriter(file_type)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text, delimiter))
    try:
        writer.add_table([one_line(field) for field in row] for row in reader)
    except csv.Error as exc:
        raise DocumentParseError(
            f'the {writer.label} file could not be read ({exc}); look for a quote (") that is never closed'
        ) from exc
    return writer.build("")


def _delimiter(text: str, expected: str) -> str:
    """``expected`` when the first line has it; otherwise what the start of the file is separated by (a CSV
    saved with ``;`` where the comma is the decimal mark, say)."""
    if expected in text.split("\n", 1)[0]:
        return expected
    try:
        return csv.Sniffer().sniff(text[:_SNIFF_CHARS], delimiters=_SNIFF_DELIMITERS).delimiter
    except csv.Error:
        # A single column: there is no delimiter to find.
        return expected


# --- XLSX -----------------------------------------------------------------------------------------------


def _xlsx_merged_ranges(archive: zipfile.ZipFile, part: str, label: str) -> list[_MergedRange]:
    """The merged ranges of a sheet's XML, which lists them after all its rows."""
    if not _mentions(archive, part, _MERGE_MARKER):
        return []
    merged: list[_MergedRange] = []
    with archive.open(part) as source:
        for element in _stream_elements(source, ("{*}row", "{*}mergeCell")):
            if etree.QName(element).localname == "mergeCell":
                left, top, right, bottom = range_boundaries(element.get("ref", ""))
                if (top, left) != (bottom, right):
                    merged.append(_MergedRange(top=top, left=left, bottom=bottom, right=right))
                if len(merged) > MAX_MERGED_RANGES:
                    raise DocumentParseError(
                        f"a sheet of the {label} file has more than {MAX_MERGED_RANGES:,} merged ranges, the "
                        "limit for one sheet; unmerge the cells or split the file"
                    )
    return merged


def _mentions(archive: zipfile.ZipFile, part: str, marker: bytes) -> bool:
    """Whether ``marker`` occurs in a member: a scan at memory speed that spares most sheets an XML parse.

    zipfile never returns more of a member than its declared size, which ``open_zip`` has checked."""
    overlap = b""
    with archive.open(part) as source:
        while chunk := source.read(1 << 20):
            window = overlap + chunk
            if marker in window:
                return True
            overlap = window[-(len(marker) - 1) :]
    return False


def _stream_elements(source: IO[bytes], tags: tuple[str, ...]) -> Iterator[etree._Element]:
    """The elements named ``tags`` as each one ends, the tree behind them dropped so memory stays flat.

    The parser's options are those of ``archives.safe_xml_parser``: no entities, DTDs or network."""
    for _, element in etree.iterparse(
        source,
        events=("end",),
        tag=tags,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
    ):
        yield element
        element.clear(keep_tail=False)
        parent = element.getparent()
        while parent is not None and element.getprevious() is not None:
            del parent[0]


# --- ODS and XLS ----------------------------------------------------------------------------------------


def _check_ods_extent(archive: zipfile.ZipFile, label: str) -> None:
    """Refuse a spreadsheet whose repeated rows and columns declare more cells than the budgets allow.

    A few hundred bytes of ODS can repeat one cell over a million rows and a thousand columns, and calamine
    allocates the whole grid (32 bytes a cell) before it returns a row: the parse child would abort. The
    repeat counts are read here, streaming, before calamine sees the file."""
    budget = _CellBudget(label)
    with archive.open("content.xml") as source:
        rows_so_far = last_filled_row = widest = 0
        for element in _stream_elements(source, (_ODS_ROW, _ODS_TABLE)):
            if element.tag == _ODS_TABLE:
                rows_so_far = last_filled_row = widest = 0
                continue
            repeat = _repeat_count(element, _ODS_ROWS_REPEATED)
            rows_so_far += repeat
            columns = filled_columns = last_filled_column = 0
            for cell in element:
                span = _repeat_count(cell, _ODS_COLUMNS_REPEATED)
                columns += span
                if cell.get(_ODS_VALUE_TYPE) is not None or len(cell):
                    filled_columns += span
                    last_filled_column = columns
            if not filled_columns:
                continue
            # calamine's grid reaches the last filled row and column: blank rows between count, trailing ones
            # do not. What this row adds is the growth of that rectangle.
            grown = rows_so_far * max(widest, last_filled_column) - last_filled_row * widest
            budget.add(filled=filled_columns * repeat, grid=grown)
            last_filled_row, widest = rows_so_far, max(widest, last_filled_column)


def _repeat_count(element: etree._Element, attribute: str) -> int:
    return max(1, int(element.get(attribute, "1")))


def _parse_with_calamine(data: bytes, writer: _TableWriter) -> ParsedDocument:
    with python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(data)) as workbook:
        for index, metadata in enumerate(workbook.sheets_metadata):
            sheet = workbook.get_sheet_by_index(index)
            # Zero-based corners; ODS has none (None), its covered cells are simply empty.
            merged = [
                _MergedRange(top=top + 1, left=left + 1, bottom=bottom + 1, right=right + 1)
                for (top, left), (bottom, right) in sheet.merged_cell_ranges or ()
            ]
            # From A1, so that rows and columns are numbered as the merged ranges and column letters count them.
            rows = ([_cell_text(value) for value in row] for row in sheet.to_python(skip_empty_area=False))
            state = "visible" if metadata.visible == python_calamine.SheetVisibleEnum.Visible else "hidden"
            writer.add_table(_fill_merged(rows, merged), name=_sheet_name(metadata.name, state))
    return writer.build("")
