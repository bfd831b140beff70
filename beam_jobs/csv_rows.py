"""The CSV files a bulk classification writes: columns, rows and file names.

Rows are formatted with the csv module (minimal quoting), so paths with commas, quotes, spaces,
line breaks (`\n` or `\r`) or non-ASCII characters survive a round trip through any CSV reader.
Paths arrive as text already (`digitflow.listing.path_text`). Cheap to import (standard library
only).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

PROBABILITY_COLUMNS: tuple[str, ...] = tuple(f"prob_{digit}" for digit in range(10))
COLUMNS: tuple[str, ...] = (
    "path",
    "digit",
    "confidence",
    "low_confidence",
    "model_version",
    *PROBABILITY_COLUMNS,
)
ERROR_COLUMNS: tuple[str, ...] = ("path", "error")


def csv_line(values: Sequence[object]) -> str:
    """One CSV record without its line terminator (WriteToText adds the newline)."""
    buffer = io.StringIO()
    # Minimal quoting quotes a field holding any character of the terminator: with "\r\n" that
    # is both `\r` and `\n` (with "\n" alone a `\r` would go out bare and break the file).
    csv.writer(buffer, lineterminator="\r\n").writerow(values)
    return buffer.getvalue()[:-2]


def prediction_line(
    path: str, probabilities: Sequence[float], model_version: str, min_confidence: float
) -> str:
    """A results row: the most probable digit, its probability and all ten probabilities."""
    digit = max(range(len(probabilities)), key=probabilities.__getitem__)
    confidence = float(probabilities[digit])
    return csv_line(
        (
            path,
            digit,
            f"{confidence:.6f}",
            "true" if confidence < min_confidence else "false",
            model_version,
            *(f"{float(p):.6f}" for p in probabilities),
        )
    )


def error_line(path: str, reason: str) -> str:
    """An errors row: the file and a short human reason."""
    return csv_line((path, reason))


def errors_path(output: str) -> str:
    """`out/results.csv` -> `out/results.errors.csv` (works for local paths and URIs)."""
    stem = output[:-4] if output.lower().endswith(".csv") else output
    return f"{stem}.errors.csv"
