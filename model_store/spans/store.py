"""The span store: labelled spans, immutable and checksummed, under a model store's root.

    datasets/<name>/images.npz    x (n, 28, 28) uint8, y (n,) uint8, sha256 (n,), holdout (n,),
                                  guess (n,): "" for a person's label, else the model that
                                  wrote it (`model:v7`); spans from before it have none
    datasets/<name>/span.json     the summary with data_sha256; written last: the commit marker
    datasets/<name>/retired.json  written once, by `remove`; nothing of the span is erased

A draft (`drafts`) is published under its name, its arrays (`arrays`) first. A label no person
confirmed is stored only when asked (`accept_unreviewed`). `active_images` pools every active
span, each image once (`pooling`). A span whose span.json cannot be read is torn: `listing`
reports it, `active_images` skips it with a warning, `remove` can retire it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from digitflow import locations
from digitflow.listing import MAX_FILE_MIB
from digitflow.locations import ChecksumMismatch, sha256_file
from model_store.errors import StoreError, WriteConflict
from model_store.metadata import now_iso, to_json
from model_store.spans.arrays import EMPTY, Arrays, arrays_of
from model_store.spans.drafts import SPAN_NAME, Draft, check_name, read_draft
from model_store.spans.pooling import pool
from model_store.spans.records import AddResult, LabelledImages, Span, SpanListing, TornSpan
from model_store.storage import open_storage
from model_store.store import default_root

DATASETS = "datasets"
IMAGES_FILE = "images.npz"
SPAN_FILE = "span.json"
RETIRED_FILE = "retired.json"
SHOWN = 10  # warnings of one kind printed before "... and N more"
_RETIREMENT = ("retired_at", "retired_reason", "retired_by")  # from retired.json, not span.json


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

        def taken(candidate: str) -> bool:
            return self._entry(candidate) is not None

        return read_draft(labels_csv, name, max_file_mib, accept_unreviewed, taken)

    def publish(self, draft: Draft) -> Span:
        """Write the draft's arrays, then its record (the commit); StoreError if its name is
        taken or it has no images."""
        if not draft.images:
            raise StoreError(f"span {draft.name} has no images")
        arrays = arrays_of(draft.images)
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
            locations.write(staged / SPAN_FILE, to_json(record))
            try:
                self._storage.publish(staged, f"{DATASETS}/{draft.name}", marker=SPAN_FILE)
            except WriteConflict:
                raise StoreError(f"span {draft.name} exists") from None
        return span

    def conflicts(self, draft: Draft) -> list[str]:
        """A line for each image of `draft` that an active span labels differently (the
        draft, the newest, wins unless it only guesses where a person labelled)."""
        rows = {image.sha256: image.row for image in draft.images}
        _, conflicts = pool([*self._active_arrays(), (draft.name, arrays_of(draft.images))])
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
        """Every active span's images pooled, each image once (see `pooling`); torn spans are
        skipped and a conflict is used, both with a warning."""
        listing = self.listing()
        parts = self._active_arrays(listing.spans)
        pooled, conflicts = pool(parts)
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
        return [name for name in self._storage.children(DATASETS) if SPAN_NAME.fullmatch(name)]

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
            arrays = {key: archive[key] for key in EMPTY if key in archive}
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


def _per_digit(labels: np.ndarray) -> dict[str, int]:
    return {str(digit): int(n) for digit, n in enumerate(np.bincount(labels, minlength=10))}
