"""A span before it is stored: its name, and LABELS.csv read and checked into a `Draft` that
`SpanStore.publish` stores."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from model_store.errors import StoreError
from model_store.spans.rows import LabelledImage, collect, parse_rows, read_source

SPAN_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")  # the alias alphabet (model_store.refs), longer


@dataclass(frozen=True)
class Draft:
    """LABELS.csv read and checked, nothing stored yet: `SpanStore.publish` stores it."""

    name: str
    created_at: str  # ISO 8601 UTC
    images: list[LabelledImage]
    problems: list[str]  # one line per row left out
    source_sha256: str

    @property
    def x(self) -> np.ndarray:
        return np.stack([image.pixels for image in self.images])

    @property
    def y(self) -> np.ndarray:
        return np.array([image.label for image in self.images], np.uint8)


def check_name(name: str) -> None:
    """StoreError unless `name` is lowercase letters, digits, - and _, starting with a letter."""
    if not SPAN_NAME.fullmatch(name):
        raise StoreError(
            f"invalid span name {name!r}: use up to 64 lowercase letters, digits, '-' and '_', "
            "starting with a letter"
        )


def read_draft(
    labels_csv: Path,
    name: str | None,
    max_file_mib: int,
    accept_unreviewed: bool,
    taken: Callable[[str], bool],
) -> Draft:
    """The usable rows of `labels_csv` as a draft span; the others become problems.

    StoreError for a `taken` name, an unreadable LABELS.csv, or rows that are a model's
    unconfirmed guesses unless `accept_unreviewed`. No file over `max_file_mib` MiB is read.
    """
    labels_csv = Path(labels_csv)
    created = datetime.now(UTC).replace(microsecond=0)
    name = _default_name(labels_csv, created) if name is None else name
    check_name(name)
    source = read_source(labels_csv, max_file_mib)
    if taken(name):  # fail fast; `SpanStore.publish` settles a race
        raise StoreError(f"span {name} exists")
    rows = parse_rows(source, labels_csv)
    guesses = sum(bool(row.guess) for row in rows)
    if guesses and not accept_unreviewed:
        raise StoreError(
            f"{labels_csv}: {guesses} of {len(rows)} rows are a model's unconfirmed guesses "
            "(source model:..., label = predicted): check each and set its source to "
            "person, or pass --accept-unreviewed to store them for training only"
        )
    folder = os.fspath(labels_csv.absolute().parent)
    images, problems = collect(rows, folder, max_file_mib)
    source_sha256 = hashlib.sha256(source).hexdigest()
    return Draft(name, created.isoformat(), images, problems, source_sha256)


def _default_name(labels_csv: Path, now: datetime) -> str:
    """The CSV's stem, slugified, and the UTC time: `labels-20250131-020000`."""
    stem = re.sub(r"[^a-z0-9_-]+", "-", labels_csv.stem.lower()).strip("-_")[:40]
    if not stem[:1].isalpha():
        stem = f"span-{stem}".rstrip("-")
    return f"{stem}-{now:%Y%m%d-%H%M%S}"
