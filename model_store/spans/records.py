"""What the span store hands out: spans (readable or torn), listings of them, the result of an
`add`, and every active span's images pooled for training."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


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
