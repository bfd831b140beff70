"""The paper under the ink: robust noise statistics and its tone as a surface over the page."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

_FRAME_SAMPLES = 32  # the paper's tone is fitted to about this many pixels per side
_FRAME_CACHE = 256  # frames kept for reuse: batches of scans often share one image size
_RIDGE = 1e-6  # keeps the paper fit solvable on 1-pixel-wide images
_SQRT2 = math.sqrt(2.0)


def quantile(values: np.ndarray, q: float) -> float:
    """The q-quantile (nearest rank) of a non-empty array; cheaper than np.percentile."""
    k = int(q * (values.size - 1))
    work = values.ravel().copy()
    work.partition(k)
    return float(work[k])


def _ranked(ordered: np.ndarray, q: float) -> float:
    """The q-quantile (nearest rank) of a non-empty sorted array, as quantile gives it."""
    return float(ordered[int(q * (ordered.size - 1))])


def _sigma(values: np.ndarray) -> float:
    """Robust standard deviation (median absolute deviation)."""
    return _mad_sigma(np.abs(values - quantile(values, 0.5)))


def _mad_sigma(deviations: np.ndarray) -> float:
    """Robust standard deviation from absolute deviations from the median."""
    return 1.4826 * quantile(deviations, 0.5)


def pixel_noise(line: np.ndarray, lag: int) -> float:
    """Pixel noise along a line of pixels, from differences `lag` apart.

    Differences cancel the paper's slow tone changes; rare steps (a shadow's edge, a corner
    filled by a rotation) are outliers the robust estimate ignores.
    """
    if line.size <= lag:
        return 0.0
    return _sigma(line[lag:] - line[:-lag]) / _SQRT2


@dataclass(frozen=True)
class Frame:
    """Samples of an image's outermost pixels, where the paper shows, with page coordinates.

    Each pixel stands for `factor` x `factor` pixels of the full image; coordinates are pixel
    centres on the full image, mapped to [-1, 1].
    """

    rows: np.ndarray  # the samples' row indices
    cols: np.ndarray  # ... and column indices
    design: np.ndarray  # (n, 6) quadratic terms at the samples
    gram: np.ndarray  # (6, 6) design.T @ design, plus a small ridge
    ys: np.ndarray  # every row's coordinate
    xs: np.ndarray  # every column's coordinate


@functools.lru_cache(maxsize=_FRAME_CACHE)
def frame_of(shape: tuple[int, ...], factor: int, full: tuple[int, int]) -> Frame:
    """Up to ~2 * _FRAME_SAMPLES samples per side of an image of `shape`, reduced by `factor`.

    It depends on the geometry only, so it is cached; its arrays are read-only.
    """
    height, width = shape
    ys, xs = axis(height, factor, full[0]), axis(width, factor, full[1])
    across = np.arange(0, width, max(1, width // _FRAME_SAMPLES))
    down = np.arange(0, height, max(1, height // _FRAME_SAMPLES))
    rows, cols = _ring(across, down, height - 1, width - 1)
    y, x = ys[rows].astype(np.float64), xs[cols].astype(np.float64)
    design = np.empty((rows.size, 6))
    design[:, 0] = 1.0
    design[:, 1] = x
    design[:, 2] = y
    np.multiply(x, x, out=design[:, 3])
    np.multiply(y, y, out=design[:, 4])
    np.multiply(x, y, out=design[:, 5])
    gram = design.T @ design + _RIDGE * np.eye(6)
    for array in (rows, cols, design, gram, ys, xs):
        array.flags.writeable = False
    return Frame(rows, cols, design, gram, ys, xs)


def _ring(
    across: np.ndarray, down: np.ndarray, bottom: int, right: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of samples along the top row, the bottom row, the left and right columns."""
    top_end, bottom_end, left_end = across.size, 2 * across.size, 2 * across.size + down.size
    rows = np.empty(bottom_end + 2 * down.size, dtype=np.intp)
    cols = np.empty_like(rows)
    rows[:top_end], cols[:top_end] = 0, across
    rows[top_end:bottom_end], cols[top_end:bottom_end] = bottom, across
    rows[bottom_end:left_end], cols[bottom_end:left_end] = down, 0
    rows[left_end:], cols[left_end:] = down, right
    return rows, cols


def axis(count: int, factor: int, full: int) -> np.ndarray:
    """Centres of `count` pixels that each span `factor` of `full` pixels, mapped to [-1, 1]."""
    return (np.arange(0.5, count) * (2.0 * factor / full) - 1.0).astype(np.float32)


def edges(image: np.ndarray) -> np.ndarray:
    """The outermost rows and columns, end to end: a line of paper for noise estimates."""
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


@dataclass(frozen=True)
class Paper:
    """The paper's level as a quadratic surface over the page.

    Models gradients and vignetting from uneven lighting. Fitted robustly to the frame, and
    clamped to the frame's own range so ink touching the edge cannot bend it into the page.
    """

    coef: np.ndarray
    low: float
    high: float

    @classmethod
    def fit(cls, frame: Frame, values: np.ndarray) -> Paper:
        """Least squares on the frame's samples, outliers (ink on the frame) set to the median."""
        median = quantile(values, 0.5)
        deviations = np.abs(values - median)
        inlier = deviations <= 3.0 * _mad_sigma(deviations) + 1e-3
        clean = np.where(inlier, values, median).astype(np.float64)
        coef = np.linalg.solve(frame.gram, frame.design.T @ clean)
        kept = np.sort(values[inlier])
        return cls(coef, _ranked(kept, 0.02), _ranked(kept, 0.98))

    def grid(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Paper level (float32) on the grid of rows `ys` x columns `xs` (float32)."""
        c0, c1, c2, c3, c4, c5 = self.coef.astype(np.float32).tolist()  # float32 values
        level = np.add.outer(c0 + c2 * ys + c4 * ys * ys, c1 * xs + c3 * xs * xs)
        level += (c5 * ys)[:, None] * xs
        return np.clip(level, self.low, self.high, out=level)
