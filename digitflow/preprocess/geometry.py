"""MNIST's own recipe: fit the ink into 20x20 keeping its aspect, centre its mass in 28x28."""

from __future__ import annotations

import functools
import math

import numpy as np

_FIELD = 28
_BOX = 20
_CENTRE = 14  # MNIST's centres of mass lie in [13.5, 14.5] (array index coordinates)
_WEIGHTS_CACHE = 512  # resampling matrices kept: one per (input, output) length
# Strokes thinner than _THIN pixels (by stroke_width; MNIST's: median ~2.5, 5th percentile ~1.7)
# are widened towards _STROKE: hairlines (a fine pen, a small digit on a big scan) cost accuracy.
_THIN = 2.0
_STROKE = 3.0


def mnist_field(ink: np.ndarray) -> np.ndarray:
    """Fit into 20x20 keeping aspect, then centre the mass in a 28x28 field (MNIST's recipe);
    hairline strokes are widened."""
    height, width = ink.shape
    scale = _BOX / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if size != (height, width):
        ink = _weights(height, size[0]) @ ink @ _weights(width, size[1]).T
        ink.clip(0.0, 1.0, out=ink)  # weights sum to 1 within rounding
    total = float(ink.sum())
    height, width = ink.shape
    com_y = float(ink.sum(axis=1) @ np.arange(height)) / total
    com_x = float(ink.sum(axis=0) @ np.arange(width)) / total
    top = min(max(math.floor(_CENTRE - com_y + 0.5), 0), _FIELD - height)
    left = min(max(math.floor(_CENTRE - com_x + 0.5), 0), _FIELD - width)
    field = np.zeros((_FIELD, _FIELD), dtype=np.float32)
    field[top : top + height, left : left + width] = ink
    return _thickened(field)


def stroke_width(field: np.ndarray) -> float:
    """Mean width of the strokes in pixels: twice the ink's area over its outline's length.

    The outline's length is the ink's total variation, times pi/4 for strokes of any slant.
    """
    variation = float(
        np.abs(field[1:] - field[:-1]).sum() + np.abs(field[:, 1:] - field[:, :-1]).sum()
    )
    return 8.0 * float(field.sum()) / (math.pi * variation) if variation else 0.0


def _thickened(field: np.ndarray) -> np.ndarray:
    """`field` (changed in place) with strokes thinner than _THIN widened towards _STROKE by a
    partial 3x3 grey dilation (a whole one widens strokes by two pixels)."""
    width = stroke_width(field)
    if width >= _THIN:
        return field
    field += np.float32(min(1.0, (_STROKE - width) / 2.0)) * (_dilated(field) - field)
    return field


def _dilated(field: np.ndarray) -> np.ndarray:
    """3x3 grey dilation: each pixel the maximum of its neighbourhood."""
    rows = field.copy()
    np.maximum(rows[1:], field[:-1], out=rows[1:])
    np.maximum(rows[:-1], field[1:], out=rows[:-1])
    grown = rows.copy()
    np.maximum(grown[:, 1:], rows[:, :-1], out=grown[:, 1:])
    np.maximum(grown[:, :-1], rows[:, 1:], out=grown[:, :-1])
    return grown


@functools.lru_cache(maxsize=_WEIGHTS_CACHE)
def _weights(size: int, new: int) -> np.ndarray:
    """(new, size) float32 matrix resampling a line of `size` pixels to `new` (read-only).

    Shrinking averages the area each new pixel covers (anti-aliased, as MNIST's digits were);
    enlarging interpolates linearly between pixel centres.
    """
    step = size / new
    pixels = np.arange(size)
    if new < size:
        bounds = np.arange(new + 1) * step
        cover = np.minimum.outer(bounds[1:], pixels + 1) - np.maximum.outer(bounds[:-1], pixels)
        weights = np.maximum(cover, 0.0)
    else:
        centres = (np.arange(new) + 0.5) * step - 0.5
        weights = np.maximum(1.0 - np.abs(np.subtract.outer(centres, pixels)), 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    weights = weights.astype(np.float32)
    weights.flags.writeable = False
    return weights
