"""Labelled spans: immutable, checksummed sets of people's own labelled digit images.

Layout under the store root, next to `versions/`:

    datasets/<name>/images.npz    x (n, 28, 28) uint8, y (n,) uint8, sha256 (n,), holdout (n,)
    datasets/<name>/span.json     the summary with data_sha256; written last: the commit marker
    datasets/<name>/retired.json  written once, by `remove`; nothing of the span is erased

An image's split follows from the sha256 of its original file bytes alone (`split_of`), so a
file lands in the same split in every span, and `active_images` pools every active span,
counting an image that is in several of them once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from digitflow import objects
from digitflow.labels import parse_digit
from digitflow.listing import MAX_FILE_MIB, UnreadableError, path_bytes, read_file
from digitflow.preprocess import PreprocessError, to_mnist
from model_store.errors import StoreError
from model_store.files import ChecksumMismatch, WriteConflict, is_uri, sha256_file
from model_store.metadata import now_iso, to_json
from model_store.storage import open_storage
from model_store.store import default_root

DATASETS = "datasets"
IMAGES_FILE = "images.npz"
SPAN_FILE = "span.json"
RETIRED_FILE = "retired.json"
HOLDOUT_PERCENT = 20
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")  # the alias alphabet (model_store.refs), longer
_ARRAY_KEYS = ("x", "y", "sha256", "holdout")  # what images.npz holds
_RETIREMENT = ("retired_at", "retired_reason", "retired_by")  # from retired.json, not span.json


@dataclass(frozen=True)
class Span:
    """One immutable, checksummed span of labelled images."""

    name: str
    created_at: str  # ISO 8601 UTC
    count: int
    per_digit: dict[str, int]  # "0".."9" -> images
    splits: dict[str, int]  # {"train": n, "holdout": m}
    source_sha256: str  # of the LABELS.csv file as given
    data_sha256: str  # of the stored images.npz
    retired_at: str | None = None
    retired_reason: str | None = None
    retired_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as `digitflow data list --json` prints it."""
        return asdict(self)


@dataclass(frozen=True)
class AddResult:
    """What `add` stored (None when no row could be used) and one line per bad row."""

    span: Span | None
    problems: list[str]


@dataclass(frozen=True)
class LabelledImages:
    """Every active span pooled, each image once; MNIST's convention (white ink 255 on 0)."""

    x_train: np.ndarray  # uint8 (n, 28, 28)
    y_train: np.ndarray  # uint8 (n,)
    x_holdout: np.ndarray
    y_holdout: np.ndarray
    holdout_ids: list[str]  # content sha256 of each holdout image, in order
    spans: tuple[str, ...]  # names of the active spans, sorted
    checksum: str  # sha256 over the active spans' data_sha256 (sorted); "" when none

    @property
    def empty(self) -> bool:
        return len(self.y_train) + len(self.y_holdout) == 0


@dataclass(frozen=True)
class _Image:
    pixels: np.ndarray  # uint8 (28, 28)
    label: int
    sha256: str  # of the original file bytes


class _BadRow(Exception):
    """A LABELS.csv row that cannot be used; `str()` is the reason."""


def split_of(content_sha256: str) -> str:
    """An image's split from its content hash alone: "holdout" for about 20%, else "train"."""
    return "holdout" if int(content_sha256[:8], 16) % 100 < HOLDOUT_PERCENT else "train"


def check_name(name: str) -> None:
    """StoreError unless `name` is lowercase letters, digits, - and _, starting with a letter."""
    if not _NAME.fullmatch(name):
        raise StoreError(
            f"invalid span name {name!r}: use up to 64 lowercase letters, digits, '-' and '_', "
            "starting with a letter"
        )


class SpanStore:
    """Labelled spans under a model store's root: a local directory, s3:// or gs://."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self._storage = open_storage(os.fspath(root) if root is not None else default_root())
        self.root = self._storage.root

    def add(
        self, labels_csv: Path, name: str | None = None, max_file_mib: int = MAX_FILE_MIB
    ) -> AddResult:
        """Store the usable rows of `labels_csv` as a new span; the others become problems.

        No file over `max_file_mib` MiB is read: its row is a problem (LABELS.csv: StoreError).
        """
        labels_csv = Path(labels_csv)
        created = datetime.now(UTC).replace(microsecond=0)
        name = _default_name(labels_csv, created) if name is None else name
        check_name(name)
        source = _read_source(labels_csv, max_file_mib)
        if self._span(name) is not None:  # fail fast; `publish` settles a race
            raise StoreError(f"span {name} exists")
        rows = _rows(source, labels_csv)
        images, problems = _collect(rows, labels_csv.absolute().parent, max_file_mib)
        if not images:
            return AddResult(None, problems)
        source_sha256 = hashlib.sha256(source).hexdigest()
        return AddResult(self._publish(name, images, source_sha256, created), problems)

    def spans(self, include_retired: bool = False) -> list[Span]:
        """Committed spans, oldest first; retired ones only with `include_retired`."""
        found = [span for name in self._names() if (span := self._span(name)) is not None]
        kept = [span for span in found if include_retired or span.retired_at is None]
        return sorted(kept, key=lambda span: (span.created_at, span.name))

    def remove(self, name: str, *, reason: str, actor: str) -> Span:
        """Retire a span: recorded once in retired.json; its images are kept, never erased."""
        if not reason.strip() or not actor.strip():
            raise StoreError("removing a span needs a non-empty reason and actor")
        span = self._get(name)
        if span.retired_at is not None:
            raise StoreError(f"span {name} was already removed at {span.retired_at}")
        span = replace(span, retired_at=now_iso(), retired_reason=reason, retired_by=actor)
        record = {key: getattr(span, key) for key in _RETIREMENT}
        try:  # only if absent: a retirement is recorded once and never changed
            self._storage.write_if(_file(name, RETIRED_FILE), to_json(record), None, history=None)
        except WriteConflict:
            raise StoreError(f"span {name} was already removed") from None
        return span

    def active_images(self) -> LabelledImages:
        """Every active span's images pooled, each image once (the first span by name wins)."""
        active = sorted(self.spans(), key=lambda span: span.name)
        pooled = _pool([self._load(span) for span in active])
        holdout = pooled["holdout"]
        shas = sorted(span.data_sha256 for span in active)
        return LabelledImages(
            x_train=pooled["x"][~holdout],
            y_train=pooled["y"][~holdout],
            x_holdout=pooled["x"][holdout],
            y_holdout=pooled["y"][holdout],
            holdout_ids=pooled["sha256"][holdout].tolist(),
            spans=tuple(span.name for span in active),
            checksum=hashlib.sha256("\n".join(shas).encode()).hexdigest() if shas else "",
        )

    def _names(self) -> list[str]:
        return [name for name in self._storage.children(DATASETS) if _NAME.fullmatch(name)]

    def _get(self, name: str) -> Span:
        check_name(name)
        span = self._span(name)
        if span is None:
            raise StoreError(f"no span {name} in {self.root}")
        return span

    def _span(self, name: str) -> Span | None:
        """The committed span `name` with its retirement, if any; None if not committed."""
        raw, _ = self._storage.read_versioned(_file(name, SPAN_FILE))
        if raw is None:
            return None
        retired, _ = self._storage.read_versioned(_file(name, RETIRED_FILE))
        try:
            record = {**json.loads(raw), **json.loads(retired or b"{}")}
            span = Span(**record)
        except (ValueError, TypeError) as error:
            raise StoreError(f"span {name} is corrupt: unreadable record ({error})") from None
        if span.name != name:
            raise StoreError(f"span {name} is corrupt: its record names {span.name!r}")
        return span

    def _publish(
        self, name: str, images: list[_Image], source_sha256: str, created: datetime
    ) -> Span:
        """Write the span's arrays, then its record (the commit); StoreError if `name` is taken."""
        arrays = _arrays(images)
        holdout = int(arrays["holdout"].sum())
        per_digit = np.bincount(arrays["y"], minlength=10)
        with self._storage.staging() as staged:
            np.savez_compressed(staged / IMAGES_FILE, **arrays)
            span = Span(
                name=name,
                created_at=created.isoformat(),
                count=len(images),
                per_digit={str(digit): int(n) for digit, n in enumerate(per_digit)},
                splits={"train": len(images) - holdout, "holdout": holdout},
                source_sha256=source_sha256,
                data_sha256=sha256_file(staged / IMAGES_FILE),
            )
            record = {k: v for k, v in span.to_dict().items() if k not in _RETIREMENT}
            (staged / SPAN_FILE).write_bytes(to_json(record))
            try:
                self._storage.publish(staged, f"{DATASETS}/{name}", marker=SPAN_FILE)
            except WriteConflict:
                raise StoreError(f"span {name} exists") from None
        return span

    def _load(self, span: Span) -> dict[str, np.ndarray]:
        """The span's arrays, from a file checked against its data_sha256."""
        try:
            path = self._storage.fetch(_file(span.name, IMAGES_FILE), span.data_sha256)
        except FileNotFoundError:
            raise StoreError(f"span {span.name} is corrupt: {IMAGES_FILE} is missing") from None
        except ChecksumMismatch:
            raise StoreError(
                f"span {span.name} is corrupt: {IMAGES_FILE} does not match its data_sha256"
            ) from None
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in _ARRAY_KEYS}


def _file(name: str, file: str) -> str:
    return f"{DATASETS}/{name}/{file}"


def _default_name(labels_csv: Path, now: datetime) -> str:
    """The CSV's stem, slugified, and the UTC time: `labels-20250131-020000`."""
    stem = re.sub(r"[^a-z0-9_-]+", "-", labels_csv.stem.lower()).strip("-_")[:40]
    if not stem[:1].isalpha():
        stem = f"span-{stem}".rstrip("-")
    return f"{stem}-{now:%Y%m%d-%H%M%S}"


def _read_source(labels_csv: Path, max_mib: int) -> bytes:
    """LABELS.csv's bytes; StoreError for anything but a regular file of at most `max_mib` MiB
    (a FIFO is refused at once, never waited on)."""
    try:
        return read_file(labels_csv, max_mib)
    except UnreadableError as error:
        raise StoreError(f"{labels_csv}: {error}") from None


def _rows(source: bytes, labels_csv: Path) -> list[tuple[int, str, str]]:
    """(row number, path, label) of each non-blank row; row 1 is the first after the header."""
    try:
        reader = csv.reader(io.StringIO(source.decode("utf-8-sig"), newline=""))
        header = [cell.strip() for cell in next(reader, [])]
        if "path" not in header or "label" not in header:
            raise StoreError(f"{labels_csv}: the header must have columns path and label")
        at_path, at_label = header.index("path"), header.index("label")
        rows = []
        for number, row in enumerate(reader, start=1):
            if any(cell.strip() for cell in row):
                cells = row + [""] * (len(header) - len(row))
                rows.append((number, cells[at_path], cells[at_label]))
    except (UnicodeDecodeError, csv.Error) as error:
        raise StoreError(f"{labels_csv} is not a readable CSV file: {error}") from None
    return rows


def _collect(
    rows: list[tuple[int, str, str]], folder: Path, max_mib: int
) -> tuple[list[_Image], list[str]]:
    """The images of the usable rows, and a problem line for each other row."""
    images, problems = [], []
    paths: dict[str | bytes, int] = {}
    contents: dict[str, int] = {}
    for number, path, label in rows:
        try:
            location = _location(path, folder)
            _claim(paths, location, number, "same path as")
            image = _image(location, label, max_mib)
            _claim(contents, image.sha256, number, "same image as")
            images.append(image)
        except _BadRow as bad:
            problems.append(f"row {number} ({path}): {bad}")
    return images, problems


def _claim(seen: dict[Any, int], key: Any, number: int, what: str) -> None:
    """Record that row `number` has `key`; _BadRow if an earlier row had it."""
    first = seen.setdefault(key, number)
    if first != number:
        raise _BadRow(f"duplicate: {what} row {first}")


def _location(path: str, folder: Path) -> str | bytes:
    """An object URI as is, or a local path's normalised absolute bytes."""
    if not path.strip():
        raise _BadRow("empty path")
    if objects.is_object_uri(path):
        return path
    if is_uri(path):
        raise _BadRow("unsupported URI: use a local path, s3:// or gs://")
    return os.path.normpath(os.path.join(os.fsencode(folder), path_bytes(path)))


def _image(location: str | bytes, label: str, max_mib: int) -> _Image:
    digit = _label(label)
    data = _read(location, max_mib)
    try:
        pixels = to_mnist(data)
    except PreprocessError as error:
        raise _BadRow(str(error)) from None
    return _Image(np.round(pixels * 255).astype(np.uint8), digit, hashlib.sha256(data).hexdigest())


def _label(text: str) -> int:
    digit = parse_digit(text)
    if digit is None:
        raise _BadRow(f"bad label {text!r}: must be a digit 0-9")
    return digit


def _read(location: str | bytes, max_mib: int) -> bytes:
    """The file's bytes; _BadRow when it is missing, too large or cannot be read."""
    try:
        return objects.read_bytes(location, max_mib)
    except UnreadableError as error:
        raise _BadRow(str(error)) from None


def _arrays(images: list[_Image]) -> dict[str, np.ndarray]:
    """What images.npz holds: pixels, labels, content hashes and the holdout flags."""
    shas = [image.sha256 for image in images]
    return {
        "x": np.stack([image.pixels for image in images]),
        "y": np.array([image.label for image in images], np.uint8),
        "sha256": np.array(shas, "<U64"),
        "holdout": np.array([split_of(sha) == "holdout" for sha in shas], bool),
    }


def _empty_arrays() -> dict[str, np.ndarray]:
    return {
        "x": np.zeros((0, 28, 28), np.uint8),
        "y": np.zeros(0, np.uint8),
        "sha256": np.zeros(0, "<U64"),
        "holdout": np.zeros(0, bool),
    }


def _pool(loaded: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The spans' arrays concatenated, keeping the first of each content hash."""
    parts = [_empty_arrays(), *loaded]
    merged = {key: np.concatenate([arrays[key] for arrays in parts]) for key in parts[0]}
    _, first = np.unique(merged["sha256"], return_index=True)
    keep = np.sort(first)
    return {key: value[keep] for key, value in merged.items()}
