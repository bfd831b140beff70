"""LABELS.csv, the file `digitflow data add` reads and `digitflow review` writes: its rows into
labelled MNIST-style images, with where each label came from.

Columns (header row first): `path` (or `file`, as `digitflow data scans` writes it) and `label`
are needed; `predicted` and `source` are optional. A row is the model's unconfirmed guess while
its `source` starts with `model:` (as `review` prefills it: `model:v7`) and its `label` is still
its `predicted` digit; every other row (no `source`, `person`, `mnist`, an edited label) is a
person's label: reviewed.

Paths, one rule for every CSV file digitflow reads (a results file in `review`, LABELS.csv in
`data add`): an s3:// or gs:// URI and an absolute path are taken as they are; a relative path
is relative to the folder of the CSV file that holds it, never to the working directory.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitflow import locations
from digitflow.labels import parse_digit
from digitflow.listing import UnreadableError, path_bytes
from digitflow.preprocess import PreprocessError, to_mnist
from model_store.errors import StoreError

GUESS = "model:"  # a `source` starting with it: a label a model wrote, until a person changes it
PATH_COLUMNS = ("path", "file")  # `file`: the header `digitflow data scans` writes
OPTIONAL_COLUMNS = ("predicted", "source")


@dataclass(frozen=True)
class Row:
    """One non-blank row of LABELS.csv, its cells as written; `number` 1 is the first after
    the header."""

    number: int
    path: str
    label: str
    predicted: str = ""
    source: str = ""

    @property
    def guess(self) -> str:
        """The model that wrote this label (`model:v7`) while it is unconfirmed; "" once a
        person has confirmed or changed it."""
        source = self.source.strip()
        unconfirmed = source.startswith(GUESS) and self.label.strip() == self.predicted.strip()
        return source if unconfirmed else ""


@dataclass(frozen=True)
class LabelledImage:
    """A usable row: the image as the model sees it, its label and where that came from."""

    row: Row
    pixels: np.ndarray  # uint8 (28, 28), white ink 255 on 0
    label: int
    sha256: str  # of the original file bytes

    @property
    def guess(self) -> str:
        return self.row.guess


class BadRow(Exception):
    """A LABELS.csv row that cannot be used; `str()` is the reason."""


def resolve_path(path: str, folder: str) -> str | bytes:
    """The file a CSV cell names (the rule above): a URI as it is, a local path made absolute
    from `folder` (the CSV file's own: a local path, or an s3:// / gs:// URI) and normalised,
    as bytes (a name need not be UTF-8)."""
    if locations.is_uri(path):
        return path
    if locations.is_object_uri(folder):
        return f"{folder.rstrip('/')}/{path}"
    return os.path.normpath(os.path.join(os.fsencode(folder), path_bytes(path)))


def csv_folder(location: str) -> str:
    """The folder of a CSV file given as a local path or an s3:// / gs:// URI."""
    if locations.is_object_uri(location):
        return location.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(location))


def read_source(labels_csv: Path, max_mib: int) -> bytes:
    """LABELS.csv's bytes; StoreError for anything but a regular file of at most `max_mib` MiB
    (a FIFO is refused at once, never waited on)."""
    try:
        return locations.read(labels_csv, max_mib)
    except UnreadableError as error:
        raise StoreError(f"{labels_csv}: {error}") from None


def parse_rows(source: bytes, labels_csv: Path) -> list[Row]:
    """Every non-blank row of LABELS.csv; StoreError for a file that is not one."""
    try:
        reader = csv.reader(io.StringIO(source.decode("utf-8-sig"), newline=""))
        header = [cell.strip() for cell in next(reader, [])]
        at = _columns(header, labels_csv)
        rows = []
        for number, cells in enumerate(reader, start=1):
            if any(cell.strip() for cell in cells):
                cells = cells + [""] * (len(header) - len(cells))
                rows.append(Row(number, **{name: cells[i] for name, i in at.items()}))
    except (UnicodeDecodeError, csv.Error) as error:
        raise StoreError(f"{labels_csv} is not a readable CSV file: {error}") from None
    return rows


def _columns(header: list[str], labels_csv: Path) -> dict[str, int]:
    """Row field -> column index; StoreError unless the header has a path and a label."""
    path = next((name for name in PATH_COLUMNS if name in header), None)
    if path is None or "label" not in header:
        raise StoreError(f"{labels_csv}: the header must have columns path and label")
    found = {"path": header.index(path), "label": header.index("label")}
    return found | {name: header.index(name) for name in OPTIONAL_COLUMNS if name in header}


def collect(rows: list[Row], folder: str, max_mib: int) -> tuple[list[LabelledImage], list[str]]:
    """The images of the usable rows, and a problem line for each other row."""
    images, problems = [], []
    paths: dict[str | bytes, int] = {}
    contents: dict[str, int] = {}
    for row in rows:
        try:
            location = _location(row.path, folder)
            _claim(paths, location, row.number, "same path as")
            image = _image(row, location, max_mib)
            _claim(contents, image.sha256, row.number, "same image as")
            images.append(image)
        except BadRow as bad:
            problems.append(f"row {row.number} ({row.path}): {bad}")
    return images, problems


def _claim(seen: dict[Any, int], key: Any, number: int, what: str) -> None:
    """Record that row `number` has `key`; BadRow if an earlier row had it."""
    first = seen.setdefault(key, number)
    if first != number:
        raise BadRow(f"duplicate: {what} row {first}")


def _location(path: str, folder: str) -> str | bytes:
    """`resolve_path`, for a cell that names something `data add` can read."""
    if not path.strip():
        raise BadRow("empty path")
    if locations.is_uri(path) and not locations.is_object_uri(path):
        raise BadRow(f"unsupported URI: use {locations.described()}")
    return resolve_path(path, folder)


def _image(row: Row, location: str | bytes, max_mib: int) -> LabelledImage:
    digit = parse_digit(row.label)
    if digit is None:
        raise BadRow(f"bad label {row.label!r}: must be a digit 0-9")
    try:
        data = locations.read(location, max_mib)
        pixels = to_mnist(data)
    except (UnreadableError, PreprocessError) as error:
        raise BadRow(str(error)) from None
    mnist = np.round(pixels * 255).astype(np.uint8)
    return LabelledImage(row, mnist, digit, hashlib.sha256(data).hexdigest())
