"""Turn a scanned, photographed or drawn digit into an MNIST-style 28x28 array.

This is the one preprocessing step that every consumer (CLI, Beam workers, training
on scans) shares. It depends on numpy and Pillow only, so it stays fast to import.

Pipeline: decode safely -> grayscale at a bounded working size (EXIF orientation and
transparency applied) (`decode`) -> on a reduced copy: mask a scanner's bed around a page
scanned askew and turn the page upright (`bed`), detect ink polarity and the paper's (possibly
uneven) tone (`paper`), find the digit, ignoring specks away from it (`ink`) -> measure its ink
at a resolution that keeps its detail -> do what MNIST did: fit the ink's bounding box into
20x20 (anti-aliased, aspect kept) and put its centre of mass at the centre of a 28x28 field,
widening hairline strokes (`geometry`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from digitflow.preprocess.decode import (
    MAX_PIXELS,
    check_size,
    grayscale,
    open_image,
)
from digitflow.preprocess.errors import (
    BlankImageError,
    EmptyFileError,
    ImageTooLargeError,
    PreprocessError,
    TruncatedImageError,
    UnreadableImageError,
)
from digitflow.preprocess.geometry import mnist_field
from digitflow.preprocess.ink import ink_map

__all__ = [
    "MAX_PIXELS",
    "BlankImageError",
    "EmptyFileError",
    "ImageTooLargeError",
    "PreprocessError",
    "TruncatedImageError",
    "UnreadableImageError",
    "to_mnist",
]


def to_mnist(image: bytes | Image.Image) -> np.ndarray:
    """-> float32 array (28, 28), values in [0, 1], white ink (1.0) on black (0.0).

    That is MNIST's convention. Accepts encoded file bytes or a Pillow image; bad input
    raises a PreprocessError subclass.
    """
    if isinstance(image, Image.Image):
        check_size(image.size)  # a lazily opened image has not decoded anything yet
        img = image
    else:
        img = open_image(bytes(image))
    return mnist_field(ink_map(grayscale(img)))
