"""CSV/TSV files as tables for the file page: every row, in pages, sorted by a column on request.

Plain functions of text. The file page reads at most `files_view.MAX_PAGE_TEXT` (4 MiB), so all rows
are held at once: sorting needs them, and the table stays bounded. Cells are plain strings that the
template escapes.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass

# The sniffer needs a few rows, not the file; a bigger sample only slows it down.
SNIFF_CHARS = 16 * 1024
SNIFF_DELIMITERS = ",;\t|"
TSV_SUFFIXES = (".tsv", ".tab")
#: Rows per page: a few hundred render at once; the next page is one click (and one request) away.
PAGE_ROWS = 500
_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class CsvTable:
    """One page of a CSV/TSV file: every row as wide as the widest; `rows` is the page, `total_rows` all."""

    header: list[str]
    rows: list[list[str]]
    total_rows: int  # data rows in the file (the header excluded)
    delimiter: str
    page: int = 1
    pages: int = 1
    first_row: int = 1  # 1-based number of the page's first row among the (sorted) rows
    column: int | None = None  # the column sorted by, if any
    descending: bool = False

    @property
    def shown_rows(self) -> int:
        return len(self.rows)


def csv_table(text: str, filename: str, *, page: int = 1, page_rows: int = PAGE_ROWS,
              column: int | None = None, descending: bool = False) -> CsvTable:
    """Page `page` of the table in `text`, sorted by `column` when given (numbers as numbers).

    Raises `csv.Error` on input the csv module cannot read (e.g. a huge field). A page past the
    last shows the last; a column past the widest sorts nothing.
    """
    sample = _sample(text)
    delimiter = _delimiter(sample, filename)
    records = [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if row]
    header = records.pop(0) if records and _has_header(sample, delimiter) else []
    width = max([len(header), *map(len, records)])
    header = header + [str(n) for n in range(len(header) + 1, width + 1)]
    if column is not None and not 0 <= column < width:
        column = None
    if column is not None:
        records = sort_rows(records, column, descending)
    pages = max(1, math.ceil(len(records) / page_rows))
    page = min(max(page, 1), pages)
    start = (page - 1) * page_rows
    rows = [row + [""] * (width - len(row)) for row in records[start:start + page_rows]]
    return CsvTable(header=header, rows=rows, total_rows=len(records), delimiter=delimiter, page=page,
                    pages=pages, first_row=start + 1, column=column, descending=descending)


def sort_rows(rows: list[list[str]], column: int, descending: bool) -> list[list[str]]:
    """Rows by one column: numbers by value, text naturally ("file2" before "file10"); empty cells last."""
    filled = [row for row in rows if column < len(row) and row[column].strip()]
    empty = [row for row in rows if not (column < len(row) and row[column].strip())]
    # sorted() is stable: equal cells keep the file's order, in either direction.
    return sorted(filled, key=lambda row: sort_key(row[column]), reverse=descending) + empty


def sort_key(cell: str) -> tuple[int, float, list[tuple[int, int | str]]]:
    """Numbers (`-3.5`, `1e3`, `1,024`) before text; both kinds comparable with each other."""
    value = cell.strip()
    try:
        number = float(value.replace(",", "") if _DIGITS.search(value) else value)
    except ValueError:
        parts = _DIGITS.split(value.casefold())
        return 1, 0.0, [(0, int(part)) if part.isdigit() else (1, part) for part in parts if part]
    # NaN compares false with everything and would leave the order undefined.
    return 0, (number if not math.isnan(number) else math.inf), []


def _sample(text: str) -> str:
    if len(text) <= SNIFF_CHARS:
        return text
    # A row cut in half would look like a different column count and mislead the sniffer.
    cut = text.rfind("\n", 0, SNIFF_CHARS)
    return text[: cut if cut > 0 else SNIFF_CHARS]


def _delimiter(sample: str, filename: str) -> str:
    # A .tsv names its delimiter; sniffing it could still prefer a comma that appears once per row.
    if filename.lower().endswith(TSV_SUFFIXES):
        return "\t"
    try:
        return csv.Sniffer().sniff(sample, delimiters=SNIFF_DELIMITERS).delimiter
    except csv.Error:  # one column, or nothing consistent: the common case wins
        return ","


def _has_header(sample: str, delimiter: str) -> bool:
    try:
        return _ChosenDelimiter(delimiter).has_header(sample)
    except (csv.Error, StopIteration):  # StopIteration: an empty sample has no first row
        return False


class _ChosenDelimiter(csv.Sniffer):
    """A sniffer whose `has_header` reads the sample with the delimiter already chosen.

    `Sniffer.has_header` sniffs the sample again, without our candidate list or the .tsv rule, and
    would then judge the header on columns split differently from the table shown.
    """

    def __init__(self, delimiter: str) -> None:
        super().__init__()
        self.delimiter = delimiter

    def sniff(self, sample: str, delimiters: str | None = None) -> type[csv.Dialect]:
        chosen = self.delimiter

        class Chosen(csv.excel):
            delimiter = chosen

        return Chosen


