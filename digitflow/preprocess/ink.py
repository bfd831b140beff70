"""Find the digit on the paper and measure its ink, polarity and paper tone removed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from digitflow.preprocess.bed import Bed, along_edge, find_bed
from digitflow.preprocess.decode import pixel_array
from digitflow.preprocess.errors import BlankImageError
from digitflow.preprocess.paper import Paper, basis, edges, frame, pixel_noise, projection, quantile

_DETECT_SIDE = 128  # the digit is located on a box-reduced copy at most this many pixels across
_MEASURE_SIDE = 48  # ... and measured on a copy of its box reduced to at least this size
_MIN_CONTRAST = 0.05  # ink on the reduced copy must differ at least this much from the paper
_NOISE_SIGMAS = 6.0  # ... and stand this many noise deviations above it
_MASK_FRACTION = 0.25  # ink detection threshold, relative to the strongest ink
_INK_FLOOR = 0.04  # ink weaker than this (or 4 sigma of paper noise) is paper
_MIN_EXTENT = 0.02  # a digit spans at least this fraction of the image's long side
_MARGIN = 2  # full-resolution pixels added around the digit's box for its faint fringe
_VIEW_PIXELS = 1 << 17  # images up to this size are read whole, and the box sliced out
_MIN_TILT = 1.0  # degrees: a page on a scanner's bed more askew than this is turned upright
_EDGE_SHARE = 0.35  # a "bed" whose edge this share of the ink hugs is paper round a big digit
_TURN = Image.Resampling.BICUBIC
_FIRST = np.zeros(1, dtype=np.intp)  # the first segment starts at index 0


@dataclass(frozen=True)
class _Detection:
    """The digit found on the reduced copy: where, which polarity, and how strong."""

    box: tuple[int, int, int, int]  # inclusive (top, bottom, left, right), reduced pixels
    dark_ink: bool
    threshold: float  # the ink level that counted as ink on the reduced copy
    paper_level: np.ndarray  # the paper's level on the reduced copy
    ink: np.ndarray  # the reduced copy's ink: its difference from the paper, signed to be > 0
    noise: float  # the reduced copy's pixel noise
    bed: np.ndarray | None  # bool mask of the scanner bed on the reduced copy, if any
    on_page: bool  # the ink lies on the page, not along the bed's edge


def ink_map(gray: Image.Image, upright: bool = False) -> np.ndarray:
    """Ink map of the digit's bounding box: 0 paper .. 1 full ink, polarity and tone removed.

    The digit is found on a box-reduced copy at most ~_DETECT_SIDE px across (fast, and
    denoised); its ink is then measured inside the box found, on a copy reduced no more than
    keeps the box ~_MEASURE_SIDE px across. A page scanned askew on a scanner's bed is turned
    upright first (unless `upright` says it has been).
    """
    width, height = gray.size
    factor = -(-max(height, width) // _DETECT_SIDE)
    levels = _floats(pixel_array(gray if factor == 1 else gray.reduce(factor), np.uint8))
    noise = pixel_noise(edges(levels), lag=2)  # 2: past JPEG's and blur's correlation
    bed = find_bed(levels, noise)
    found = _detect(levels, noise, bed, factor, (height, width))
    if found.bed is not None and not upright and abs(bed.tilt) >= _MIN_TILT:
        level = round(bed.tone * 255)
        return ink_map(gray.rotate(-bed.tilt, _TURN, fillcolor=level), upright=True)
    ink, scale = _measure(gray, found, factor)
    if max(ink.shape) * scale < max(3.0, _MIN_EXTENT * max(gray.size)):
        raise BlankImageError("blank: no ink found")
    return ink


def _detect(
    levels: np.ndarray, noise: float, bed: Bed | None, factor: int, full: tuple[int, int]
) -> _Detection:
    """Locate the digit on the reduced copy `levels` (0..1) of an image of size `full`, on the
    paper beside the scanner's `bed` if one shows.

    Without ink there, with "ink" that hugs its edge, or with light "ink" beside a white bed,
    what looked like a bed is the paper around a digit that fills the image (the "ink" being
    its outline, or the paper in its loops).
    """
    if bed is not None:
        try:
            found = _locate(levels, noise, bed, factor, full)
        except BlankImageError:
            found = None
        if found is not None and found.on_page:
            return found
    return _locate(levels, noise, None, factor, full)


def _locate(
    levels: np.ndarray, noise: float, bed: Bed | None, factor: int, full: tuple[int, int]
) -> _Detection:
    """_detect's work, with or without the bed."""
    height, width = levels.shape
    ys, xs = basis(0, height, factor, full[0]), basis(0, width, factor, full[1])
    if bed is None:
        paper = Paper.fit(levels.take(frame(levels.shape)))
    else:
        paper = Paper.fit(levels[bed.rows, bed.cols], projection(ys[bed.rows, 1], xs[bed.cols, 1]))
    background = paper.grid(ys, xs)
    ink = levels - background  # < 0: darker than the paper
    if bed is not None:
        ink[bed.mask] = 0.0
    darkest, lightest = -float(ink.min()), float(ink.max())
    dark_ink = darkest >= lightest
    if dark_ink:
        ink = np.negative(ink, out=ink)
    peak = darkest if dark_ink else lightest  # the max of `ink` as it is now
    if peak < max(_MIN_CONTRAST, _NOISE_SIGMAS * noise):
        raise BlankImageError("blank: no ink found")
    threshold = max(_MASK_FRACTION * peak, 4.0 * noise)
    weight = ink * (ink > threshold)
    box = _digit_box(weight)
    if bed is None:
        return _Detection(box, dark_ink, threshold, background, ink, noise, None, True)
    top, bottom, left, right = box
    digit = (slice(top, bottom + 1), slice(left, right + 1))
    on_page = along_edge(bed.mask, weight, digit) <= _EDGE_SHARE and (dark_ink or not bed.lighter)
    return _Detection(box, dark_ink, threshold, background, ink, noise, bed.mask, on_page)


def _measure(gray: Image.Image, found: _Detection, factor: int) -> tuple[np.ndarray, int]:
    """Ink (0..1, float32) in the digit's box: the paper's noise floor cut, strong ink at 1;
    and the image's pixels per pixel of it."""
    ink, noise, scale = _box_ink(gray, found, factor)
    floor = max(_INK_FLOOR, 4.0 * noise)
    strong = ink[ink > max(found.threshold, floor)]
    core = quantile(strong, 0.9) if strong.size else float(ink.max())
    ink -= floor  # float32 throughout (the noise level is a Python float)
    ink *= np.float32(1.0 / max(core - floor, 0.05))
    return _tight(ink.clip(0.0, 1.0, out=ink)), scale


def _box_ink(gray: Image.Image, found: _Detection, factor: int) -> tuple[np.ndarray, float, int]:
    """The ink (a new float32 array; the bed, if any, as none) in the digit's box, widened by
    _MARGIN pixels, its pixel noise, and the image's pixels per pixel of it.

    On the reduced copy if the box spans _MEASURE_SIDE of its pixels, else on a copy of the
    box reduced less (over the paper's level found on the reduced copy: it varies too slowly
    to differ across one of its pixels)."""
    width, height = gray.size
    top, bottom, left, right = found.box
    if max(bottom - top, right - left) + 1 >= _MEASURE_SIDE or factor == 1:
        pad = -(-_MARGIN // factor)
        box = slice(max(top - pad, 0), bottom + 1 + pad), slice(max(left - pad, 0), right + 1 + pad)
        return found.ink[box].copy(), found.noise, factor
    y0, y1 = max(top * factor - _MARGIN, 0), min((bottom + 1) * factor + _MARGIN, height)
    x0, x1 = max(left * factor - _MARGIN, 0), min((right + 1) * factor + _MARGIN, width)
    step = max(1, max(y1 - y0, x1 - x0) // _MEASURE_SIDE)
    if step > 1:
        pixels = pixel_array(gray.reduce(step, (x0, y0, x1, y1)), np.uint8)
    elif width * height <= _VIEW_PIXELS:  # copying it all costs less than Pillow's crop
        pixels = pixel_array(gray, np.uint8)[y0:y1, x0:x1]
    else:
        pixels = pixel_array(gray.crop((x0, y0, x1, y1)), np.uint8)
    rows, cols = pixels.shape
    down = (y0 + np.arange(rows) * step) // factor  # the reduced copy's pixels
    across = (x0 + np.arange(cols) * step) // factor
    background = found.paper_level.take(down, axis=0).take(across, axis=1)
    ink = _floats(pixels)
    # b - a is exactly -(a - b) in floating point: dark ink is measured below the paper.
    ink = np.subtract(background, ink, out=ink) if found.dark_ink else ink - background
    if found.bed is not None:
        ink[found.bed.take(down, axis=0).take(across, axis=1)] = 0.0
    return ink, pixel_noise(_floats(edges(pixels)), lag=2), step


def _floats(pixels: np.ndarray) -> np.ndarray:
    """8-bit grey levels as float32 in [0, 1]."""
    return np.multiply(pixels, np.float32(1 / 255), dtype=np.float32)


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
    if idx[-1] - idx[0] + 1 == idx.size:  # one run: nothing to cut
        return int(idx[0]), int(idx[-1])
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
