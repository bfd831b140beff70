"""Turn a scanned, photographed or drawn digit into an MNIST-style 28x28 array.

This is the one preprocessing step that every consumer (CLI, Beam workers, training
on scans) shares. It depends on numpy and Pillow only, so it stays fast to import.

Pipeline: decode safely -> grayscale at a bounded working size (EXIF orientation and
transparency applied) -> detect ink polarity and the paper's (possibly uneven) tone ->
find the digit, ignoring specks away from it -> do what MNIST did: fit the ink's
bounding box into 20x20 (anti-aliased, aspect kept) and put its centre of mass at the
centre of a 28x28 field.
"""

from __future__ import annotations

import functools
import io
import math
import re
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, JpegImagePlugin, UnidentifiedImageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
)
MAX_PIXELS: int = 40_000_000

_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")  # never EPS & co: no external tools
_WORK_SIDE = 512  # images are reduced until their long side is below 2x this
_DETECT_SIDE = 128  # the digit is located on a copy whose long side is at most this
_FIELD = 28
_BOX = 20
_CENTRE = 14  # MNIST's centres of mass lie in [13.5, 14.5] (array index coordinates)
_MIN_CONTRAST = 0.05  # smoothed ink must differ at least this much from the paper
_NOISE_SIGMAS = 6.0  # ... and stand this many noise deviations above it
_MASK_FRACTION = 0.25  # ink detection threshold, relative to the strongest ink
_INK_FLOOR = 0.04  # ink weaker than this (or 4 sigma of paper noise) is paper
_MIN_EXTENT = 0.02  # a digit spans at least this fraction of the image's long side
_FRAME_SAMPLES = 32  # the paper's tone is fitted to about this many pixels per side
_FRAME_CACHE = 256  # frames kept for reuse: batches of scans often share one image size
_RIDGE = 1e-6  # keeps the paper fit solvable on 1-pixel-wide images
_SQRT2 = math.sqrt(2.0)
_FIRST = np.zeros(1, dtype=np.intp)  # the first segment starts at index 0
_ORIENTATION = ExifTags.Base.Orientation
_EXIF_TRANSPOSE = {  # as in ImageOps.exif_transpose
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class PreprocessError(ValueError):
    """The input is not a usable digit image; `str(err)` is a short human reason."""


class EmptyFileError(PreprocessError):
    """The input has no bytes at all."""


class UnreadableImageError(PreprocessError):
    """Not an image, or a format or mode that is not supported."""


class TruncatedImageError(PreprocessError):
    """The image data ends before the image does."""


class ImageTooLargeError(PreprocessError):
    """More than MAX_PIXELS pixels: refused before decoding (decompression bombs)."""


class BlankImageError(PreprocessError):
    """The image decodes but shows no ink."""


def to_mnist(image: bytes | Image.Image) -> np.ndarray:
    """-> float32 array (28, 28), values in [0, 1], white ink (1.0) on black (0.0).

    That is MNIST's convention. Accepts encoded file bytes or a Pillow image; bad input
    raises a PreprocessError subclass.
    """
    if isinstance(image, Image.Image):
        _check_size(image.size)  # a lazily opened image has not decoded anything yet
        img = image
    else:
        img = _open(bytes(image))
    return _mnist_field(_ink(_grayscale(img)))


def _open(data: bytes) -> Image.Image:
    """Identify encoded bytes (lazily, no pixel data yet), refusing bombs before any decoding."""
    if not data:
        raise EmptyFileError("empty file")
    try:
        img = Image.open(io.BytesIO(data), formats=_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        count = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        raise ImageTooLargeError(f"too large: {count} (limit {MAX_PIXELS:,})") from err
    except UnidentifiedImageError as err:
        raise UnreadableImageError("unreadable: not an image or unsupported format") from err
    except Exception as err:  # Pillow's header parsers raise many types on corrupt data
        raise _decode_error(err) from err
    _check_size(img.size)
    if isinstance(img, JpegImagePlugin.JpegImageFile):
        # Decode straight to grayscale, and at 1/2..1/8 scale when much larger than needed.
        # Each side at least 1: Pillow divides by it (a 48x32552 strip would ask for width 0).
        factor = max(1, max(img.size) // _WORK_SIDE)
        img.draft("L", (max(1, img.size[0] // factor), max(1, img.size[1] // factor)))
    return img


def _check_size(size: tuple[int, int]) -> None:
    """Raise ImageTooLargeError for images with more than MAX_PIXELS pixels."""
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageTooLargeError(f"too large: {width}x{height} pixels (limit {MAX_PIXELS:,})")


def _decode_error(err: Exception) -> PreprocessError:
    """Map a decoder exception to a typed error."""
    detail = str(err)
    if isinstance(err, EOFError) or "truncated" in detail.lower():
        return TruncatedImageError("truncated: image data ends early")
    detail = detail.splitlines()[0][:80] if detail else type(err).__name__
    return UnreadableImageError(f"unreadable: not an image or unsupported format ({detail})")


def _grayscale(img: Image.Image) -> Image.Image:
    """Decode to an 8-bit grey image ("L") of at most the working size, turned upright (EXIF)."""
    try:
        img.load()
        orientation = _orientation(img)
        gray = _reduce(_gray_image(img))
    except Exception as err:  # decoders raise OSError, SyntaxError, ValueError, zlib.error...
        raise _decode_error(err) from err
    if 0 in gray.size:
        raise BlankImageError("blank: no ink found")
    method = _EXIF_TRANSPOSE.get(orientation)
    return gray if method is None else gray.transpose(method)


def _orientation(img: Image.Image) -> int:
    """EXIF orientation tag (1 = as stored); unreadable EXIF counts as 1."""
    try:
        return int(img.getexif().get(_ORIENTATION, 1))
    except Exception:  # corrupt EXIF must not make good pixels unreadable
        return 1


def _gray_image(img: Image.Image) -> Image.Image:
    """Grey ("L") version of any Pillow mode; transparency is composited on white."""
    if img.mode.startswith("I") or img.mode == "F":
        return _high_depth_gray(img)
    if img.has_transparency_data or img.mode not in {"1", "L", "P", "RGB", "CMYK", "YCbCr"}:
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA"))
    return img.convert("L")


def _high_depth_gray(img: Image.Image) -> Image.Image:
    """16/32-bit integer and float images, scaled from their nominal range to 8 bits."""
    full_scale = 65535.0 if img.mode.startswith("I;16") else None
    arr = np.nan_to_num(np.asarray(img.convert("F")), nan=0.0, posinf=0.0, neginf=0.0)
    if full_scale is None:
        top = float(arr.max(initial=0.0))
        full_scale = next((s for s in (1.0, 255.0, 65535.0) if top <= s), top)
    return Image.fromarray(np.clip(arr * (255.0 / full_scale) + 0.5, 0, 255).astype(np.uint8))


def _reduce(img: Image.Image) -> Image.Image:
    """Box-reduce very large images so the long side is below 2 * _WORK_SIDE."""
    factor = max(img.size) // _WORK_SIDE
    return img.reduce(factor) if factor >= 2 else img


def _array(img: Image.Image, dtype: type) -> np.ndarray:
    """Read-only (height, width) array of a one-band image; cheaper than np.asarray(img)."""
    return np.frombuffer(img.tobytes(), dtype).reshape(img.height, img.width)


def _floats(pixels: np.ndarray) -> np.ndarray:
    """8-bit grey levels as float32 in [0, 1]."""
    return np.multiply(pixels, np.float32(1 / 255), dtype=np.float32)


def _ink(gray: Image.Image) -> np.ndarray:
    """Ink map of the digit's bounding box: 0 paper .. 1 full ink, polarity and tone removed.

    The digit is found on a copy at most ~_DETECT_SIDE px across (fast, and denoised); its
    ink is then measured at full resolution inside the box found. Only these two small
    arrays are ever floating point.
    """
    width, height = gray.size
    factor = -(-max(height, width) // _DETECT_SIDE)
    pixels = _array(gray, np.uint8)
    coarse = _floats(pixels if factor == 1 else _array(gray.reduce(factor), np.uint8))
    frame = _frame(coarse.shape, factor, (height, width))
    ring = coarse[frame.rows, frame.cols]
    paper = _Paper.fit(frame, ring)
    background = paper.grid(frame.ys, frame.xs)
    smooth = _box3(coarse)
    smooth -= background  # < 0: darker than the paper
    darkest, lightest = -float(smooth.min()), float(smooth.max())
    dark_ink = darkest >= lightest
    if dark_ink:
        smooth = np.negative(smooth, out=smooth)
    smooth_noise = _noise(_edges(smooth), lag=3)  # 3: past the box filter's reach
    peak = darkest if dark_ink else lightest  # the max of `smooth` as it is now
    if peak < max(_MIN_CONTRAST, _NOISE_SIGMAS * smooth_noise):
        raise BlankImageError("blank: no ink found")
    threshold = max(_MASK_FRACTION * peak, 4.0 * smooth_noise)
    top, bottom, left, right = _digit_box(smooth * (smooth > threshold))
    if (max(bottom - top, right - left) + 1) * factor < max(3.0, _MIN_EXTENT * max(gray.size)):
        raise BlankImageError("blank: no ink found")

    # Full resolution, widened by the faint fringe the coarse threshold may have missed.
    noise = _noise(_floats(_edges(pixels)), lag=2)  # 2: past JPEG's and blur's correlation
    top, left = max(top * factor - 2, 0), max(left * factor - 2, 0)
    bottom, right = min((bottom + 1) * factor + 2, height), min((right + 1) * factor + 2, width)
    if factor > 1:
        ys, xs = _axis(height, 1, height)[top:bottom], _axis(width, 1, width)[left:right]
        background = paper.grid(ys, xs)
    else:
        background = background[top:bottom, left:right]
    levels = _floats(pixels[top:bottom, left:right])
    # b - a is exactly -(a - b) in floating point: dark ink is measured below the paper.
    ink = background - levels if dark_ink else levels - background
    floor = max(_INK_FLOOR, 4.0 * noise)
    strong = ink[ink > max(threshold, floor)]
    core = _quantile(strong, 0.9) if strong.size else float(ink.max())
    ink -= floor  # float32 throughout (the noise level is a Python float)
    ink /= max(core - floor, 0.05)
    return _tight(np.clip(ink, 0.0, 1.0, out=ink))


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


def _quantile(values: np.ndarray, q: float) -> float:
    """The q-quantile (nearest rank) of a non-empty array; cheaper than np.percentile."""
    k = int(q * (values.size - 1))
    work = values.ravel().copy()
    work.partition(k)
    return float(work[k])


def _ranked(ordered: np.ndarray, q: float) -> float:
    """The q-quantile (nearest rank) of a non-empty sorted array, as _quantile gives it."""
    return float(ordered[int(q * (ordered.size - 1))])


def _sigma(values: np.ndarray) -> float:
    """Robust standard deviation (median absolute deviation)."""
    return _mad_sigma(np.abs(values - _quantile(values, 0.5)))


def _mad_sigma(deviations: np.ndarray) -> float:
    """Robust standard deviation from absolute deviations from the median."""
    return 1.4826 * _quantile(deviations, 0.5)


def _noise(line: np.ndarray, lag: int) -> float:
    """Pixel noise along a line of pixels, from differences `lag` apart.

    Differences cancel the paper's slow tone changes; rare steps (a shadow's edge, a corner
    filled by a rotation) are outliers the robust estimate ignores.
    """
    if line.size <= lag:
        return 0.0
    return _sigma(line[lag:] - line[:-lag]) / _SQRT2


@dataclass(frozen=True)
class _Frame:
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
def _frame(shape: tuple[int, ...], factor: int, full: tuple[int, int]) -> _Frame:
    """Up to ~2 * _FRAME_SAMPLES samples per side of an image of `shape`, reduced by `factor`.

    It depends on the geometry only, so it is cached; its arrays are read-only.
    """
    height, width = shape
    ys, xs = _axis(height, factor, full[0]), _axis(width, factor, full[1])
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
    return _Frame(rows, cols, design, gram, ys, xs)


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


def _axis(count: int, factor: int, full: int) -> np.ndarray:
    """Centres of `count` pixels that each span `factor` of `full` pixels, mapped to [-1, 1]."""
    return (np.arange(0.5, count) * (2.0 * factor / full) - 1.0).astype(np.float32)


def _edges(image: np.ndarray) -> np.ndarray:
    """The outermost rows and columns, end to end: a line of paper for noise estimates."""
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


@dataclass(frozen=True)
class _Paper:
    """The paper's level as a quadratic surface over the page.

    Models gradients and vignetting from uneven lighting. Fitted robustly to the frame, and
    clamped to the frame's own range so ink touching the edge cannot bend it into the page.
    """

    coef: np.ndarray
    low: float
    high: float

    @classmethod
    def fit(cls, frame: _Frame, values: np.ndarray) -> _Paper:
        """Least squares on the frame's samples, outliers (ink on the frame) set to the median."""
        median = _quantile(values, 0.5)
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


def _mnist_field(ink: np.ndarray) -> np.ndarray:
    """Fit into 20x20 keeping aspect, then centre the mass in a 28x28 field (MNIST's recipe)."""
    height, width = ink.shape
    scale = _BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != (width, height):
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
        ink = np.ascontiguousarray(ink, dtype=np.float32)
        small = Image.frombuffer("F", (width, height), ink, "raw", "F", 0, 1)
        ink = np.clip(_array(small.resize(size, resample), np.float32), 0.0, 1.0)
    total = float(ink.sum())
    height, width = ink.shape
    com_y = float(ink.sum(axis=1) @ np.arange(height)) / total
    com_x = float(ink.sum(axis=0) @ np.arange(width)) / total
    top = min(max(math.floor(_CENTRE - com_y + 0.5), 0), _FIELD - height)
    left = min(max(math.floor(_CENTRE - com_x + 0.5), 0), _FIELD - width)
    field = np.zeros((_FIELD, _FIELD), dtype=np.float32)
    field[top : top + height, left : left + width] = ink
    return field
