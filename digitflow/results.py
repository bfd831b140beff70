"""The CSV files of a bulk classification: a `Result` per classified image in the results
file, a (path, error) row per failure in the errors file.

A result is computed once, from the model's probabilities (`Result.of`): the job's row and
counters and `digitflow review` all read it. Each results column is declared once, in
`RESULT_COLUMNS`, with the cell it holds and the value that cell reads back as (`read_result`).

Rows are formatted with the csv module (minimal quoting), so paths with commas, quotes, spaces,
line breaks (`\\n` or `\\r`) or non-ASCII characters survive a round trip through any CSV reader.
Paths are text, as `digitflow.listing.path_text` writes them. Standard library only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from digitflow.labels import parse_digit


@dataclass(frozen=True)
class Result:
    """One classified image: its path, the most probable digit, its probability, whether that
    is below the run's minimum confidence, the model's version and all ten probabilities.

    Read back from a file, a digit that is not one of 0-9 and a number that is not a
    probability (0 to 1) are None.
    """

    path: str
    digit: int | None
    confidence: float | None
    low_confidence: bool
    model_version: str
    probabilities: tuple[float | None, ...]

    @classmethod
    def of(
        cls, path: str, probabilities: Sequence[float], model_version: str, min_confidence: float
    ) -> Result:
        """The result of the model's `probabilities` for the image at `path`."""
        digit = max(range(len(probabilities)), key=probabilities.__getitem__)
        confidence = float(probabilities[digit])
        return cls(
            path,
            digit,
            confidence,
            confidence < min_confidence,
            model_version,
            tuple(map(float, probabilities)),
        )


@dataclass(frozen=True)
class Column:
    """A results column: its name, its cell for a result, the value a cell reads back as."""

    name: str
    cell: Callable[[Result], str]
    read: Callable[[str], object]


def probability(text: str) -> float | None:
    """The number `text` is, if it is a probability (0 to 1); None if not (`nan` included)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 else None


def _is_true(text: str) -> bool:
    return text == "true"


def _probability_column(digit: int) -> Column:
    return Column(f"prob_{digit}", lambda r: f"{r.probabilities[digit]:.6f}", probability)


PROBABILITIES = tuple(_probability_column(digit) for digit in range(10))
RESULT_COLUMNS: tuple[Column, ...] = (
    Column("path", lambda r: r.path, str),
    Column("digit", lambda r: str(r.digit), parse_digit),
    Column("confidence", lambda r: f"{r.confidence:.6f}", probability),
    Column("low_confidence", lambda r: "true" if r.low_confidence else "false", _is_true),
    Column("model_version", lambda r: r.model_version, str),
    *PROBABILITIES,
)  # each single column is named as the Result field it holds
COLUMNS: tuple[str, ...] = tuple(column.name for column in RESULT_COLUMNS)
ERROR_COLUMNS: tuple[str, ...] = ("path", "error")


def csv_line(values: Iterable[object]) -> str:
    """One CSV record without its line terminator (WriteToText adds the newline)."""
    buffer = io.StringIO()
    # Minimal quoting quotes a field holding any character of the terminator: with "\r\n" that
    # is both `\r` and `\n` (with "\n" alone a `\r` would go out bare and break the file).
    csv.writer(buffer, lineterminator="\r\n").writerow(values)
    return buffer.getvalue()[:-2]


def result_line(result: Result) -> str:
    """A results row: each column's cell."""
    return csv_line(column.cell(result) for column in RESULT_COLUMNS)


def read_result(record: Mapping[str, str | None]) -> Result:
    """The result a results row holds, as `csv.DictReader` gives it: a missing column or cell
    reads as an empty one."""
    cells = {column.name: column.read(record.get(column.name) or "") for column in RESULT_COLUMNS}
    probabilities = tuple(cells.pop(column.name) for column in PROBABILITIES)
    return Result(**cells, probabilities=probabilities)


def error_line(path: str, reason: str) -> str:
    """An errors row: the file and a short human reason."""
    return csv_line((path, reason))


def errors_path(output: str) -> str:
    """`out/results.csv` -> `out/results.errors.csv` (works for local paths and URIs)."""
    stem = output[:-4] if output.lower().endswith(".csv") else output
    return f"{stem}.errors.csv"
