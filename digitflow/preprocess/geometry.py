"""MNIST's own recipe: fit the ink into 20x20 keeping its aspect, centre its mass in 28x28."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from digitflow.preprocess.decode import pixel_array

_FIELD = 28
_BOX = 20
_CENTRE = 14  # MNIST's centres of mass lie in [13.5, 14.5] (array index coordinates)


def mnist_field(ink: np.ndarray) -> np.ndarray:
    """Fit into 20x20 keeping aspect, then centre the mass in a 28x28 field (MNIST's recipe)."""
    height, width = ink.shape
    scale = _BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != (width, height):
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
        ink = np.ascontiguousarray(ink, dtype=np.float32)
        small = Image.frombuffer("F", (width, height), ink, "raw", "F", 0, 1)
        ink = np.clip(pixel_array(small.resize(size, resample), np.float32), 0.0, 1.0)
    total = float(ink.sum())
    height, width = ink.shape
    com_y = float(ink.sum(axis=1) @ np.arange(height)) / total
    com_x = float(ink.sum(axis=0) @ np.arange(width)) / total
    top = min(max(math.floor(_CENTRE - com_y + 0.5), 0), _FIELD - height)
    left = min(max(math.floor(_CENTRE - com_x + 0.5), 0), _FIELD - width)
    field = np.zeros((_FIELD, _FIELD), dtype=np.float32)
    field[top : top + height, left : left + width] = ink
    return field
