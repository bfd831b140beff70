"""Find the digit on the paper and measure its ink, polarity and paper tone removed."""

from __future__ import annotations

import numpy as np
from PIL import Image

from digitflow.preprocess.decode import pixel_array
from digitflow.preprocess.errors import BlankImageError
from digitflow.preprocess.paper import Paper, axis, edges, frame_of, pixel_noise, quantile

_DETECT_SIDE = 128  # the digit is located on a copy whose long side is at most this
_MIN_CONTRAST = 0.05  # smoothed ink must differ at least this much from the paper
_NOISE_SIGMAS = 6.0  # ... and stand this many noise deviations above it
_MASK_FRACTION = 0.25  # ink detection threshold, relative to the strongest ink
_INK_FLOOR = 0.04  # ink weaker than this (or 4 sigma of paper noise) is paper
_MIN_EXTENT = 0.02  # a digit spans at least this fraction of the image's long side
_FIRST = np.zeros(1, dtype=np.intp)  # the first segment starts at index 0


def ink_map(gray: Image.Image) -> np.ndarray:
    """Ink map of the digit's bounding box: 0 paper .. 1 full ink, polarity and tone removed.

    The digit is found on a copy at most ~_DETECT_SIDE px across (fast, and denoised); its
    ink is then measured at full resolution inside the box found. Only these two small
    arrays are ever floating point.
    """
    width, height = gray.size
    factor = -(-max(height, width) // _DETECT_SIDE)
    pixels = pixel_array(gray, np.uint8)
    coarse = _floats(pixels if factor == 1 else pixel_array(gray.reduce(factor), np.uint8))
    frame = frame_of(coarse.shape, factor, (height, width))
    ring = coarse[frame.rows, frame.cols]
    paper = Paper.fit(frame, ring)
    background = paper.grid(frame.ys, frame.xs)
    smooth = _box3(coarse)
    smooth -= background  # < 0: darker than the paper
    darkest, lightest = -float(smooth.min()), float(smooth.max())
    dark_ink = darkest >= lightest
    if dark_ink:
        smooth = np.negative(smooth, out=smooth)
    smooth_noise = pixel_noise(edges(smooth), lag=3)  # 3: past the box filter's reach
    peak = darkest if dark_ink else lightest  # the max of `smooth` as it is now
    if peak < max(_MIN_CONTRAST, _NOISE_SIGMAS * smooth_noise):
        raise BlankImageError("blank: no ink found")
    threshold = max(_MASK_FRACTION * peak, 4.0 * smooth_noise)
    top, bottom, left, right = _digit_box(smooth * (smooth > threshold))
    if (max(bottom - top, right - left) + 1) * factor < max(3.0, _MIN_EXTENT * max(gray.size)):
        raise BlankImageError("blank: no ink found")

    # Full resolution, widened by the faint fringe the coarse threshold may have missed.
    noise = pixel_noise(_floats(edges(pixels)), lag=2)  # 2: past JPEG's and blur's correlation
    top, left = max(top * factor - 2, 0), max(left * factor - 2, 0)
    bottom, right = min((bottom + 1) * factor + 2, height), min((right + 1) * factor + 2, width)
    if factor > 1:
        ys, xs = axis(height, 1, height)[top:bottom], axis(width, 1, width)[left:right]
        background = paper.grid(ys, xs)
    else:
        background = background[top:bottom, left:right]
    levels = _floats(pixels[top:bottom, left:right])
    # b - a is exactly -(a - b) in floating point: dark ink is measured below the paper.
    ink = background - levels if dark_ink else levels - background
    floor = max(_INK_FLOOR, 4.0 * noise)
    strong = ink[ink > max(threshold, floor)]
    core = quantile(strong, 0.9) if strong.size else float(ink.max())
    ink -= floor  # float32 throughout (the noise level is a Python float)
    ink /= max(core - floor, 0.05)
    return _tight(np.clip(ink, 0.0, 1.0, out=ink))


def _floats(pixels: np.ndarray) -> np.ndarray:
    """8-bit grey levels as float32 in [0, 1]."""
    return np.multiply(pixels, np.float32(1 / 255), dtype=np.float32)


def _box3(arr: np.ndarray) -> np.ndarray:
    """3x3 mean filter, edges replicated."""
    rows = arr.copy()
    rows[1:] += arr[:-1]
    rows[:-1] += arr[1:]
    rows[0] += arr[0]
    rows[-1] += arr[-1]
    out = rows.copy()
    out[:, 1:] += rows[:, :-1]
    out[:, :-1] += rows[:, 1:]
    out[:, 0] += rows[:, 0]
    out[:, -1] += rows[:, -1]
    out *= np.float32(1 / 9)
    return out


def _digit_box(weight: np.ndarray) -> tuple[int, int, int, int]:
    """Inclusive (top, bottom, left, right) of the heaviest cluster of ink; far specks are cut."""
    left, right = _main_span(weight.sum(axis=0))
    top, bottom = _main_span(weight[:, left : right + 1].sum(axis=1))
    left, right = _main_span(weight[top : bottom + 1].sum(axis=0))
    return top, bottom, left, right


def _main_span(profile: np.ndarray) -> tuple[int, int]:
    """Span of the heaviest group of inked runs in a 1-D projection.

    Runs closer than a quarter of the heaviest run's length (min 2 px) belong together.
    """
    idx = profile.nonzero()[0]
    mass = profile[idx]
    step = idx[1:] - idx[:-1]
    heaviest = _heaviest(mass, step > 1)
    tolerance = max(2, (idx[heaviest[1] - 1] - idx[heaviest[0]] + 1) // 4)
    first, end = _heaviest(mass, step > tolerance + 1)
    return int(idx[first]), int(idx[end - 1])


def _heaviest(mass: np.ndarray, cut: np.ndarray) -> tuple[int, int]:
    """[first, end) of the heaviest segment of `mass`, cut where `cut` (between items) is set."""
    breaks = cut.nonzero()[0]
    if breaks.size == 0:  # one segment: skip the sums
        return 0, mass.size
    starts = np.concatenate((_FIRST, breaks + 1))
    best = int(np.add.reduceat(mass, starts).argmax())
    end = starts[best + 1] if best + 1 < starts.size else mass.size
    return int(starts[best]), int(end)


def _tight(ink: np.ndarray) -> np.ndarray:
    """Crop to the bounding box of non-zero ink."""
    rows = ink.any(axis=1).nonzero()[0]
    cols = ink.any(axis=0).nonzero()[0]
    if rows.size == 0:
        raise BlankImageError("blank: no ink found")
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
