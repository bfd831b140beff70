"""The scanner bed around a page scanned askew: neither paper nor ink.

A flatbed scanner captures the whole glass. A page laid on it askew leaves the bed (the black
glass or the white lid, in any case a tone of its own) in the corners and margins. Seen from
the image's border, the bed is a run of one uniform tone that ends in a step to the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from digitflow.preprocess.paper import quantile

_TOLERANCE = 0.03  # the bed's tone varies less than this (or 4 noise sigmas) ...
_CONTRAST = 2.0  # ... and differs from the paper's by more than this many tolerances
_GAP = 3  # the page's edge (blurred, anti-aliased) ends this many pixels past the bed's tone
_MIN_BORDER = 0.25  # the bed shows along at least this fraction of the image's border
_MIN_CORNERS = 3  # ... and in at least this many of its corners
_MAX_SLOPE = 0.5  # the page's edges are measured where they run within ~27 degrees of the axes
_STRAIGHT = 0.6  # ... and this fraction of them must follow one straight slope (not a digit's)
_SLACK = 1.5  # pixels an edge may stray from that slope
_MIN_SIDE = 16  # smaller images are not scans of a page on a bed
_PAPER_SAMPLES = 32  # the paper's tone is the median of about this many pixels squared


@dataclass(frozen=True)
class Bed:
    """Where the bed shows, and where the page's paper starts along each line from the border."""

    mask: np.ndarray  # bool (height, width): bed pixels, the page's blurred edge included
    rows: np.ndarray  # paper pixels just inside the page's edges: their rows ...
    cols: np.ndarray  # ... and columns
    tone: float  # the bed's grey level, 0..1
    lighter: bool  # lighter than the paper (a white lid), not darker (black glass)
    tilt: float  # the page's angle in degrees, counter-clockwise (as Image.rotate turns)


def find_bed(levels: np.ndarray, noise: float) -> Bed | None:
    """The bed around the page on a reduced grey copy (float, 0..1) of a scan; None if none.

    Three of the four corners must share a tone unlike the paper's (the median pixel), runs
    of that tone from the border must end in a step to paper along a quarter of it, and mostly
    along straight edges: a page's, not the outline of a digit that fills the image.
    """
    if min(levels.shape) < _MIN_SIDE:
        return None
    tolerance = max(_TOLERANCE, 4.0 * noise)
    tones = _tones(levels, tolerance)
    if tones is None:
        return None
    tone, paper = tones
    bedlike = np.abs(levels - tone) <= tolerance
    sides = (bedlike, bedlike[:, ::-1], bedlike.T, bedlike.T[:, ::-1])
    views = (levels, levels[:, ::-1], levels.T, levels.T[:, ::-1])
    reaches, steps, fulls = zip(
        *(_reach(side, view, tone, paper) for side, view in zip(sides, views, strict=True)),
        strict=True,
    )
    shown = np.concatenate(steps) | np.concatenate(fulls)
    slope = _edge_slope(reaches, steps)
    if np.count_nonzero(shown) < _MIN_BORDER * shown.size or slope is None:
        return None
    tilt = math.degrees(math.atan(slope))
    return Bed(
        _mask(reaches, levels.shape), *_page_edge(reaches, levels.shape), tone, tone > paper, tilt
    )


def _tones(levels: np.ndarray, tolerance: float) -> tuple[float, float] | None:
    """(bed, paper) tones if three corners share one well unlike the paper's, else None."""
    corners = sorted(float(levels[y, x]) for y in (0, -1) for x in (0, -1))
    tone = (corners[1] + corners[2]) / 2.0
    if sum(abs(corner - tone) <= tolerance for corner in corners) < _MIN_CORNERS:
        return None
    step = max(1, min(levels.shape) // _PAPER_SAMPLES)
    paper = quantile(levels[::step, ::step], 0.5)
    return None if abs(tone - paper) <= _CONTRAST * tolerance else (tone, paper)


def _reach(
    bedlike: np.ndarray, levels: np.ndarray, tone: float, paper: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How far the bed reaches into each row from its start; the rows where it ends in a step
    to paper (not in a tone that fades as a shadow does); the rows that are all bed."""
    count, length = bedlike.shape
    run = bedlike.argmin(axis=1)  # the first pixel off the bed's tone; 0 if none
    full = (run == 0) & bedlike[:, 0]  # all bed: argmin found nothing off it
    beyond = levels[np.arange(count), np.minimum(run + _GAP, length - 1)]
    paperlike = np.abs(beyond - paper) < np.abs(beyond - tone)
    step = (run > 0) & (run + _GAP < length) & paperlike
    return np.where(full, length, run), step, full


def along_edge(mask: np.ndarray, weight: np.ndarray, box: tuple[slice, slice]) -> float:
    """The share of `weight` (ink) in `box` lying along the edge of the bed's `mask`, just off it.

    A digit on a page keeps away from its edges; if most of it hugs the bed's edge, what looked
    like a bed is the paper around a digit that fills the image, and the "digit" its outline.
    """
    fringe = (_grown(mask, _GAP) & ~mask)[box]
    weight = weight[box]
    total = float(weight.sum())
    return float(weight[fringe].sum()) / total if total > 0 else 1.0


def _edge_slope(reaches: tuple[np.ndarray, ...], steps: tuple[np.ndarray, ...]) -> float | None:
    """The tangent of the page's angle (counter-clockwise) from the slopes of its edges; None
    if they are not straight.

    Along each side of the image the bed's reach traces the page's nearest edge: its slope
    over a quarter of the side, where it steps to paper at both ends, is the tangent (its sign
    set by the side). The median resists the page's corners and the bed's specks.
    """
    slopes, lags = [], []
    for reach, step, sign in zip(reaches, steps, (1, -1, -1, 1), strict=True):
        lag = max(1, reach.size // 4)
        both = step[lag:] & step[:-lag]
        slopes.append((reach[lag:][both] - reach[:-lag][both]) * (sign / lag))
        lags.append(np.full(slopes[-1].size, lag))
    slope, lag = np.concatenate(slopes), np.concatenate(lags)
    steep = np.abs(slope) >= _MAX_SLOPE
    if steep.all():
        return None
    median = quantile(slope[~steep], 0.5)
    straight = np.count_nonzero(np.abs(slope - median) * lag <= _SLACK)
    return median if straight >= _STRAIGHT * slope.size else None


def _mask(reaches: tuple[np.ndarray, ...], shape: tuple[int, int]) -> np.ndarray:
    """Bool mask of the bed: how far it reaches from each side, grown over the page's edge."""
    left, right, top, bottom = reaches
    height, width = shape
    rows, cols = np.arange(height)[:, None], np.arange(width)
    mask = (cols < left[:, None]) | (cols >= width - right[:, None])
    mask |= (rows < top) | (rows >= height - bottom)
    return _grown(mask, _GAP)


def _grown(mask: np.ndarray, by: int) -> np.ndarray:
    """`mask` grown by `by` pixels in every direction (a square dilation)."""
    tall = mask.copy()
    for step in range(1, by + 1):
        tall[step:] |= mask[:-step]
        tall[:-step] |= mask[step:]
    grown = tall.copy()
    for step in range(1, by + 1):
        grown[:, step:] |= tall[:, :-step]
        grown[:, :-step] |= tall[:, step:]
    return grown


def _page_edge(
    reaches: tuple[np.ndarray, ...], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of pixels just past the bed's reach (and its growth) along every row and
    column that is not all bed: the paper at the page's edges."""
    left, right, top, bottom = reaches
    height, width = shape
    down, across = np.arange(height), np.arange(width)
    past = 2 * _GAP
    rows = np.concatenate([down, down, top + past, height - 1 - past - bottom])
    cols = np.concatenate([left + past, width - 1 - past - right, across, across])
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    return rows[inside], cols[inside]
