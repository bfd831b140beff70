"""What a span's images.npz holds: pixels, labels, content hashes, holdout flags and who
guessed each label, one row per image.

An image's split follows from the sha256 of its original file bytes alone (`split_of`), so a
file lands in the same split in every span. A label no person confirmed (`rows`) always trains,
never in a holdout: no model is judged on labels a model wrote.
"""

from __future__ import annotations

import numpy as np

from model_store.spans.rows import LabelledImage

HOLDOUT_PERCENT = 20

Arrays = dict[str, np.ndarray]

EMPTY: Arrays = {
    "x": np.zeros((0, 28, 28), np.uint8),
    "y": np.zeros(0, np.uint8),
    "sha256": np.zeros(0, "<U64"),
    "holdout": np.zeros(0, bool),
    "guess": np.zeros(0, "<U1"),
}
"""The arrays of no images; its keys are every array images.npz holds."""


def split_of(content_sha256: str) -> str:
    """An image's split from its content hash alone: "holdout" for about 20%, else "train"."""
    return "holdout" if int(content_sha256[:8], 16) % 100 < HOLDOUT_PERCENT else "train"


def arrays_of(images: list[LabelledImage]) -> Arrays:
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
