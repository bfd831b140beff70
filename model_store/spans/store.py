"""Labelled spans: immutable, checksummed sets of people's own labelled digit images.

Layout under the store root, next to `versions/`:

    datasets/<name>/images.npz    x (n, 28, 28) uint8, y (n,) uint8, sha256 (n,), holdout (n,),
                                  guess (n,): "" for a person's label, else the model that
                                  wrote it (`model:v7`); spans from before it have none
    datasets/<name>/span.json     the summary with data_sha256; written last: the commit marker
    datasets/<name>/retired.json  written once, by `remove`; nothing of the span is erased

An image's split follows from the sha256 of its original file bytes alone (`split_of`), so a
file lands in the same split in every span. A label no person confirmed (`rows`) is stored
only when asked (`accept_unreviewed`) and always trains, never in a holdout: no model is judged
on labels a model wrote.

`active_images` pools every active span, each image once. Where spans label an image
differently: a person's label beats a model's guess, then the newest span (by creation time)
wins, and a warning names the image and both spans. A span whose span.json cannot be read is
torn: `listing` reports it, `active_images` skips it with a warning, `remove` can retire it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from digitflow.listing import MAX_FILE_MIB
from model_store.errors import StoreError
from model_store.files import ChecksumMismatch, WriteConflict, sha256_file
from model_store.metadata import now_iso, to_json
from model_store.spans.rows import LabelledImage, collect, parse_rows, read_source
from model_store.storage import open_storage
from model_store.store import default_root

DATASETS = "datasets"
IMAGES_FILE = "images.npz"
SPAN_FILE = "span.json"
RETIRED_FILE = "retired.json"
HOLDOUT_PERCENT = 20
SHOWN = 10  # warnings of one kind printed before "... and N more"
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")  # the alias alphabet (model_store.refs), longer
_ARRAY_KEYS = ("x", "y", "sha256", "holdout", "guess")  # what images.npz holds
_RETIREMENT = ("retired_at", "retired_reason", "retired_by")  # from retired.json, not span.json

Arrays = dict[str, np.ndarray]


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
    unreviewed: int = 0  # images labelled by a model, no person confirmed: train only
    retired_at: str | None = None
    retired_reason: str | None = None
    retired_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as `digitflow data list --json` prints it."""
        return asdict(self)


@dataclass(frozen=True)
class TornSpan:
    """A span whose record cannot be read: listed as such, never trained on, retirable."""

    name: str
    problem: str  # one line
    retired_at: str | None = None
    retired_reason: str | None = None
    retired_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form: listed beside the readable spans, told apart by `problem`."""
        return asdict(self)


@dataclass(frozen=True)
class SpanListing:
    """Every committed span: the readable ones, oldest first, and the torn ones by name."""

    spans: list[Span]
    torn: list[TornSpan]


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
    x_holdout: np.ndarray  # people's labels only
    y_holdout: np.ndarray
    holdout_ids: list[str]  # content sha256 of each holdout image, in order
    spans: tuple[str, ...]  # names of the active spans, sorted
    checksum: str  # sha256 over the active spans' data_sha256 (sorted); "" when none
    warnings: tuple[str, ...] = ()  # torn spans skipped, images the spans label differently

    @property
    def empty(self) -> bool:
        return len(self.y_train) + len(self.y_holdout) == 0


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


def first_lines(lines: Sequence[str], more: str) -> list[str]:
    """At most SHOWN of `lines`, then `... and N more {more}` for the rest."""
    rest = len(lines) - SHOWN
    return [*lines[:SHOWN], *([f"... and {rest} more {more}"] if rest > 0 else [])]


class SpanStore:
    """Labelled spans under a model store's root: a local directory, s3:// or gs://."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self._storage = open_storage(os.fspath(root) if root is not None else default_root())
        self.root = self._storage.root

    def add(
        self,
        labels_csv: Path,
        name: str | None = None,
        max_file_mib: int = MAX_FILE_MIB,
        accept_unreviewed: bool = False,
    ) -> AddResult:
        """`read` then `publish`: store the usable rows of `labels_csv` as a new span."""
        draft = self.read(labels_csv, name, max_file_mib, accept_unreviewed)
        return AddResult(self.publish(draft) if draft.images else None, draft.problems)

    def read(
        self,
        labels_csv: Path,
        name: str | None = None,
        max_file_mib: int = MAX_FILE_MIB,
        accept_unreviewed: bool = False,
    ) -> Draft:
        """The usable rows of `labels_csv` as a draft span; the others become problems.

        StoreError for a taken name, an unreadable LABELS.csv, or rows that are a model's
        unconfirmed guesses unless `accept_unreviewed`. No file over `max_file_mib` MiB is read.
        """
        labels_csv = Path(labels_csv)
        created = datetime.now(UTC).replace(microsecond=0)
        name = _default_name(labels_csv, created) if name is None else name
        check_name(name)
        source = read_source(labels_csv, max_file_mib)
        if self._entry(name) is not None:  # fail fast; `publish` settles a race
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

    def publish(self, draft: Draft) -> Span:
        """Write the draft's arrays, then its record (the commit); StoreError if its name is
        taken or it has no images."""
        if not draft.images:
            raise StoreError(f"span {draft.name} has no images")
        arrays = _arrays(draft.images)
        holdout = int(arrays["holdout"].sum())
        with self._storage.staging() as staged:
            np.savez_compressed(staged / IMAGES_FILE, **arrays)
            span = Span(
                name=draft.name,
                created_at=draft.created_at,
                count=len(draft.images),
                per_digit=_per_digit(arrays["y"]),
                splits={"train": len(draft.images) - holdout, "holdout": holdout},
                source_sha256=draft.source_sha256,
                data_sha256=sha256_file(staged / IMAGES_FILE),
                unreviewed=int((arrays["guess"] != "").sum()),
            )
            record = {k: v for k, v in span.to_dict().items() if k not in _RETIREMENT}
            (staged / SPAN_FILE).write_bytes(to_json(record))
            try:
                self._storage.publish(staged, f"{DATASETS}/{draft.name}", marker=SPAN_FILE)
            except WriteConflict:
                raise StoreError(f"span {draft.name} exists") from None
        return span

    def conflicts(self, draft: Draft) -> list[str]:
        """A line for each image of `draft` that an active span labels differently (the
        draft, the newest, wins unless it only guesses where a person labelled)."""
        rows = {image.sha256: image.row for image in draft.images}
        _, conflicts = _pool([*self._active_arrays(), (draft.name, _arrays(draft.images))])
        lines = [
            conflict.line(f"row {row.number} ({row.path})")
            for conflict in conflicts
            if (row := rows.get(conflict.sha256)) is not None
        ]
        return first_lines(lines, "images labelled differently")

    def listing(self, include_retired: bool = False) -> SpanListing:
        """Committed spans, oldest first, and the torn ones; retired only with
        `include_retired`."""
        found = [entry for name in self._names() if (entry := self._entry(name)) is not None]
        kept = [entry for entry in found if include_retired or entry.retired_at is None]
        spans = [entry for entry in kept if isinstance(entry, Span)]
        return SpanListing(
            sorted(spans, key=lambda span: (span.created_at, span.name)),
            [entry for entry in kept if isinstance(entry, TornSpan)],
        )

    def spans(self, include_retired: bool = False) -> list[Span]:
        """The readable committed spans, oldest first; retired ones only with
        `include_retired`."""
        return self.listing(include_retired).spans

    def remove(self, name: str, *, reason: str, actor: str) -> Span | TornSpan:
        """Retire a span, torn or not: recorded once in retired.json; nothing is erased."""
        if not reason.strip() or not actor.strip():
            raise StoreError("removing a span needs a non-empty reason and actor")
        entry = self._get(name)
        if entry.retired_at is not None:
            raise StoreError(f"span {name} was already removed at {entry.retired_at}")
        entry = replace(entry, retired_at=now_iso(), retired_reason=reason, retired_by=actor)
        record = {key: getattr(entry, key) for key in _RETIREMENT}
        try:  # only if absent: a retirement is recorded once and never changed
            self._storage.write_if(_file(name, RETIRED_FILE), to_json(record), None, history=None)
        except WriteConflict:
            raise StoreError(f"span {name} was already removed") from None
        return entry

    def active_images(self) -> LabelledImages:
        """Every active span's images pooled, each image once (see the module's rules); torn
        spans are skipped and a conflict is used, both with a warning."""
        listing = self.listing()
        parts = self._active_arrays(listing.spans)
        pooled, conflicts = _pool(parts)
        holdout = pooled["holdout"]
        shas = sorted(span.data_sha256 for span in listing.spans)
        torn = [f"{entry.problem}: skipped" for entry in listing.torn]
        lines = [conflict.line(f"image {conflict.sha256[:12]}") for conflict in conflicts]
        return LabelledImages(
            x_train=pooled["x"][~holdout],
            y_train=pooled["y"][~holdout],
            x_holdout=pooled["x"][holdout],
            y_holdout=pooled["y"][holdout],
            holdout_ids=pooled["sha256"][holdout].tolist(),
            spans=tuple(sorted(span.name for span in listing.spans)),
            checksum=hashlib.sha256("\n".join(shas).encode()).hexdigest() if shas else "",
            warnings=(*torn, *first_lines(lines, "images labelled differently")),
        )

    def _active_arrays(self, spans: Iterable[Span] | None = None) -> list[tuple[str, Arrays]]:
        """(name, arrays) of each active span, oldest first."""
        spans = self.spans() if spans is None else spans
        return [(span.name, self._load(span)) for span in spans]

    def _names(self) -> list[str]:
        return [name for name in self._storage.children(DATASETS) if _NAME.fullmatch(name)]

    def _get(self, name: str) -> Span | TornSpan:
        check_name(name)
        entry = self._entry(name)
        if entry is None:
            raise StoreError(f"no span {name} in {self.root}")
        return entry

    def _entry(self, name: str) -> Span | TornSpan | None:
        """The committed span `name` with its retirement, torn if its record cannot be read;
        None if not committed."""
        raw, _ = self._storage.read_versioned(_file(name, SPAN_FILE))
        if raw is None:
            return None
        retired, _ = self._storage.read_versioned(_file(name, RETIRED_FILE))
        try:
            retirement = _record(retired or b"{}", _RETIREMENT)
        except (ValueError, TypeError) as error:
            return TornSpan(name, f"span {name} is corrupt: unreadable {RETIRED_FILE} ({error})")
        try:
            span = Span(**{**json.loads(raw), **retirement})
        except (ValueError, TypeError) as error:
            problem = f"span {name} is corrupt: unreadable {SPAN_FILE} ({error})"
            return TornSpan(name, problem, **retirement)
        if span.name != name:
            problem = f"span {name} is corrupt: its record names {span.name!r}"
            return TornSpan(name, problem, **retirement)
        return span

    def _load(self, span: Span) -> Arrays:
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
            arrays = {key: archive[key] for key in _ARRAY_KEYS if key in archive}
        arrays.setdefault("guess", np.full(len(arrays["y"]), "", "<U1"))  # older spans
        return arrays


def _file(name: str, file: str) -> str:
    return f"{DATASETS}/{name}/{file}"


def _record(raw: bytes, keys: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object `raw` holds, only `keys`; ValueError or TypeError if it is not one."""
    record = json.loads(raw)
    if not isinstance(record, dict):
        raise TypeError("not a JSON object")
    return {key: record[key] for key in keys if key in record}


def _default_name(labels_csv: Path, now: datetime) -> str:
    """The CSV's stem, slugified, and the UTC time: `labels-20250131-020000`."""
    stem = re.sub(r"[^a-z0-9_-]+", "-", labels_csv.stem.lower()).strip("-_")[:40]
    if not stem[:1].isalpha():
        stem = f"span-{stem}".rstrip("-")
    return f"{stem}-{now:%Y%m%d-%H%M%S}"


def _per_digit(labels: np.ndarray) -> dict[str, int]:
    return {str(digit): int(n) for digit, n in enumerate(np.bincount(labels, minlength=10))}


def _arrays(images: list[LabelledImage]) -> Arrays:
    """What images.npz holds: pixels, labels, content hashes, holdout flags (a person's labels
    only) and who guessed each label ("" for a person)."""
    guesses = [image.guess for image in images]
    return {
        "x": np.stack([image.pixels for image in images]),
        "y": np.array([image.label for image in images], np.uint8),
        "sha256": np.array([image.sha256 for image in images], "<U64"),
        "holdout": np.array(
            [split_of(image.sha256) == "holdout" and not image.guess for image in images], bool
        ),
        "guess": np.array(guesses, str) if any(guesses) else np.full(len(images), "", "<U1"),
    }


_EMPTY: Arrays = {
    "x": np.zeros((0, 28, 28), np.uint8),
    "y": np.zeros(0, np.uint8),
    "sha256": np.zeros(0, "<U64"),
    "holdout": np.zeros(0, bool),
    "guess": np.zeros(0, "<U1"),
}


@dataclass(frozen=True)
class _Conflict:
    """An image two spans label differently, and which label is used."""

    sha256: str
    lost: tuple[str, int]  # (span, label)
    won: tuple[str, int]
    why: str

    def line(self, image: str) -> str:
        """`image 3f2a... is labelled 7 in span a and 1 in span b: b's label is used (why)`."""
        (lost_in, lost), (won_in, won) = self.lost, self.won
        return (
            f"{image} is labelled {lost} in span {lost_in} and {won} in span {won_in}: "
            f"{won_in}'s label is used ({self.why})"
        )


def _pool(parts: Sequence[tuple[str, Arrays]]) -> tuple[Arrays, list[_Conflict]]:
    """The spans' arrays (oldest span first) pooled, each content hash once: a person's label
    beats a model's guess, then the newest span wins. Also each label overruled."""
    merged = {
        key: np.concatenate([_EMPTY[key], *(part[key] for _, part in parts)]) for key in _EMPTY
    }
    if not len(merged["y"]):
        return merged, []
    age = np.concatenate([np.full(len(arrays["y"]), i) for i, (_, arrays) in enumerate(parts)])
    order = np.lexsort((age, merged["guess"] == "", merged["sha256"]))  # last key sorts first
    sha = merged["sha256"][order]
    last = np.append(sha[1:] != sha[:-1], True)  # the winner: the last row of each hash
    winner = order[last][np.cumsum(np.append(True, last[:-1])) - 1]  # each sorted row's winner
    names, y, guess = [name for name, _ in parts], merged["y"], merged["guess"]

    def conflict(lost: int, won: int) -> _Conflict:
        person = bool(guess[lost]) and not guess[won]
        why = "a person's label over a model's guess" if person else "newest span"
        return _Conflict(
            str(merged["sha256"][won]),
            (names[age[lost]], int(y[lost])),
            (names[age[won]], int(y[won])),
            why,
        )

    pairs = sorted(zip(winner[~last], order[~last], strict=True))
    conflicts = [conflict(lost, won) for won, lost in pairs if y[lost] != y[won]]
    keep = np.sort(order[last])
    return {key: value[keep] for key, value in merged.items()}, conflicts
