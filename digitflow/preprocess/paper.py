"""The paper under the ink: robust noise statistics and its tone as a surface over the page."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

_FRAME_SAMPLES = 32  # the paper's tone is fitted to this many pixels per side of the image
_FRAME_CACHE = 256  # frames kept for reuse: batches of scans often share one image size
_BASIS_CACHE = 512  # bases kept for reuse: one per (pixels, step, line length)
_RIDGE = 1e-6  # keeps the paper fit solvable when samples crowd together
_SQRT2 = math.sqrt(2.0)
# Terms [1, x, x^2, y, xy, y^2] placed in the 3x3 matrix T of level = [1 y y^2] T [1 x x^2]^T.
_TERMS = np.zeros((9, 6))
_TERMS[[0, 1, 2, 3, 4, 6], range(6)] = 1.0


def quantile(values: np.ndarray, q: float) -> float:
    """The q-quantile (nearest rank) of a non-empty array; cheaper than np.percentile."""
    k = int(q * (values.size - 1))
    work = values.flatten()  # a copy
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


def edges(image: np.ndarray) -> np.ndarray:
    """The outermost rows and columns, end to end: a line of paper for noise estimates."""
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


@functools.lru_cache(maxsize=_BASIS_CACHE)
def basis(start: int, count: int, step: int, full: int) -> np.ndarray:
    """(count, 3) float32 powers [1, t, t^2] of the centres t of `count` pixels, each `step`
    pixels of a line of `full` pixels from `start` on, mapped to [-1, 1] (read-only)."""
    t = np.arange(count) * (2.0 * step / full) + ((2.0 * start + step) / full - 1.0)
    powers = np.empty((count, 3), np.float32)
    powers[:, 0] = 1.0
    powers[:, 1] = t
    powers[:, 2] = t * t
    powers.flags.writeable = False
    return powers


def projection(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(9, n) least-squares map from n samples at page coordinates (ys, xs) to the paper's
    quadratic surface, as the 3x3 terms that `Paper.grid` multiplies by powers of y and x."""
    y, x = np.asarray(ys, np.float64), np.asarray(xs, np.float64)
    design = np.stack([np.ones_like(x), x, x * x, y, x * y, y * y], axis=1)
    solve = np.linalg.solve(design.T @ design + _RIDGE * np.eye(6), design.T)
    return _TERMS @ solve


def _sides(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs) of samples at `positions` (0..1) along the top, bottom, left and right sides."""
    starts, ends = np.zeros_like(positions), np.ones_like(positions)
    ys = np.concatenate([starts, ends, positions, positions])
    xs = np.concatenate([positions, positions, starts, ends])
    return ys, xs


# The frame's samples lie at the same fractions (0..1) of every image's sides: the projection
# from their values to the paper's surface is the same for all images.
_FRAME_YS, _FRAME_XS = _sides((np.arange(_FRAME_SAMPLES) + 0.5) / _FRAME_SAMPLES)
_FRAME_PROJECTION = projection(2.0 * _FRAME_YS - 1.0, 2.0 * _FRAME_XS - 1.0)


@functools.lru_cache(maxsize=_FRAME_CACHE)
def frame(shape: tuple[int, int]) -> np.ndarray:
    """Flat indices (into the raveled image) of _FRAME_SAMPLES pixels along each side of an
    image of `shape`: one `take` reads them, cheaper than indexing by rows and columns."""
    height, width = shape
    rows = (_FRAME_YS * (height - 1) + 0.5).astype(np.intp)
    cols = (_FRAME_XS * (width - 1) + 0.5).astype(np.intp)
    flat = rows * width + cols
    flat.flags.writeable = False
    return flat


@dataclass(frozen=True)
class Paper:
    """The paper's level as a quadratic surface over the page.

    Models gradients and vignetting from uneven lighting. Fitted robustly to samples of the
    paper, and clamped to their own range so ink touching them cannot bend it into the page.
    """

    terms: np.ndarray  # (3, 3) float32: level = [1 y y^2] @ terms @ [1 x x^2]^T
    low: float
    high: float

    @classmethod
    def fit(cls, values: np.ndarray, project: np.ndarray = _FRAME_PROJECTION) -> Paper:
        """Least squares through `project`, outliers (ink on the samples) set to the median.

        The default projection is the image frame's (samples where `frame` puts them).
        """
        ordered = values.copy()
        ordered.sort()
        median = _ranked(ordered, 0.5)
        deviations = np.abs(values - median)
        reach = 3.0 * _mad_sigma(deviations) + 1e-3
        terms = project @ np.where(deviations <= reach, values, median)
        first = int(ordered.searchsorted(median - reach, "left"))
        kept = ordered[first : ordered.searchsorted(median + reach, "right")]
        return cls(terms.reshape(3, 3).astype(np.float32), _ranked(kept, 0.02), _ranked(kept, 0.98))

    def grid(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Paper level (float32) on the grid of `rows` x `cols`, each given by its `basis`."""
        level = (rows @ self.terms) @ cols.T
        return level.clip(self.low, self.high, out=level)
