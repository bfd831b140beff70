"""Many spans' arrays pooled into one training set, each image (content hash) once.

Where spans label an image differently, a person's label beats a model's guess, then the
newest span wins; each overruled label is a `Conflict`, which the span store turns into a
warning naming the image and both spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model_store.spans.arrays import EMPTY, Arrays


@dataclass(frozen=True)
class Conflict:
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


def pool(parts: Sequence[tuple[str, Arrays]]) -> tuple[Arrays, list[Conflict]]:
    """The spans' arrays (oldest span first) pooled, each content hash once: a person's label
    beats a model's guess, then the newest span wins. Also each label overruled."""
    merged = {key: np.concatenate([EMPTY[key], *(part[key] for _, part in parts)]) for key in EMPTY}
    if not len(merged["y"]):
        return merged, []
    age = np.concatenate([np.full(len(arrays["y"]), i) for i, (_, arrays) in enumerate(parts)])
    order = np.lexsort((age, merged["guess"] == "", merged["sha256"]))  # last key sorts first
    sha = merged["sha256"][order]
    last = np.append(sha[1:] != sha[:-1], True)  # the winner: the last row of each hash
    winner = order[last][np.cumsum(np.append(True, last[:-1])) - 1]  # each sorted row's winner
    names, y, guess = [name for name, _ in parts], merged["y"], merged["guess"]

    def conflict(lost: int, won: int) -> Conflict:
        person = bool(guess[lost]) and not guess[won]
        why = "a person's label over a model's guess" if person else "newest span"
        return Conflict(
            str(merged["sha256"][won]),
            (names[age[lost]], int(y[lost])),
            (names[age[won]], int(y[won])),
            why,
        )

    pairs = sorted(zip(winner[~last], order[~last], strict=True))
    conflicts = [conflict(lost, won) for won, lost in pairs if y[lost] != y[won]]
    keep = np.sort(order[last])
    return {key: value[keep] for key, value in merged.items()}, conflicts
