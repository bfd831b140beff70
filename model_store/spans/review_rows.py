"""Which rows a review shows: read from one or more results CSV files, ranked by confidence
(an untrusted row below every other), the least confident kept, at most `limit`.

Paths follow the rule of every CSV file digitflow reads (`model_store.spans.rows.resolve_path`):
a relative path in a results file is relative to that file's folder.
"""

from __future__ import annotations

import csv
import heapq
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TextIO

from digitflow import locations
from digitflow.listing import path_bytes, path_text
from digitflow.results import Result, read_result
from model_store.spans.rows import csv_folder, resolve_path

NEEDED = ("path", "digit", "confidence")


class ReviewError(Exception):
    """The review cannot be written; `str()` says why, in one line."""


def rank(row: Result) -> float:
    """A row's place, lowest first: its confidence, below every one when its digit or
    confidence is None (not one of 0-9, not a probability)."""
    if row.digit is None or row.confidence is None:
        return -1.0
    return row.confidence


def trusted(row: Result) -> bool:
    """Whether a row's prediction can prefill its label."""
    return rank(row) >= 0.0


@dataclass(frozen=True)
class Selection:
    """The rows to review, in order, how many met the filter before the limit, and the folder
    holding every local scan of the results (None: none is local)."""

    rows: list[Result]
    matching: int
    folder: bytes | None


def read_rows(results: Sequence[str]) -> Iterator[Result]:
    """Every row of the results files, in file order; ReviewError for a file that is not one."""
    for name in results:
        with _open_text(name) as text:
            try:
                yield from _rows(name, csv.DictReader(text), csv_folder(name))
            except UnicodeDecodeError:
                raise ReviewError(f"{name} is not a results file: not UTF-8 text") from None


def _rows(name: str, reader: csv.DictReader, folder: str) -> Iterator[Result]:
    missing = [column for column in NEEDED if column not in (reader.fieldnames or ())]
    if missing:
        raise ReviewError(f"{name} is not a results file: no column {', '.join(missing)}")
    for record in reader:
        if any(record[column] is None for column in NEEDED):  # fewer cells than columns
            raise ReviewError(f"{name}, line {reader.line_num}: not a results row")
        row = read_result(record)
        yield replace(row, path=_resolved(row.path, folder))


def _resolved(path: str, folder: str) -> str:
    """`path` as the results file names it, resolved from the file's `folder`, as text."""
    return path_text(resolve_path(path, folder)) if path else path


def select(rows: Iterator[Result], below: float | None, limit: int) -> Selection:
    """The rows below `below` (None: all; untrusted rows always), lowest rank first (ties in
    file order), at most `limit`; only those are kept in memory. Also finds the folder holding
    every local scan of `rows`."""
    kept: list[tuple[float, int, Result]] = []  # a heap of (-rank, -order, row)
    matching, folder = 0, None
    for order, row in enumerate(rows):
        folder = _common_folder(folder, row.path)
        if below is not None and rank(row) >= below:
            continue
        matching += 1
        item = (-rank(row), -order, row)
        if len(kept) < limit:
            heapq.heappush(kept, item)
        elif item > kept[0]:
            heapq.heapreplace(kept, item)
    return Selection([row for *_, row in sorted(kept, reverse=True)], matching, folder)


def _common_folder(folder: bytes | None, path: str) -> bytes | None:
    """The folder holding `folder` (None: none yet) and the scan at `path`, if it is local."""
    if locations.is_object_uri(path):
        return folder
    parent = os.path.dirname(os.path.abspath(path_bytes(path)))
    return parent if folder is None else os.path.commonpath([folder, parent])


def _open_text(name: str) -> TextIO:
    """A results file as text for the csv module, local or an object (s3://, gs://)."""
    try:
        stream = locations.reader(name)  # the caller closes it
    except OSError as error:
        raise ReviewError(f"cannot read {name}: {error.strerror or error}") from None
    return io.TextIOWrapper(stream, encoding="utf-8", newline="")
