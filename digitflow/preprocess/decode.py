"""Decode image bytes safely into an upright 8-bit grey image of bounded size."""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import ExifTags, Image, JpegImagePlugin, UnidentifiedImageError

from digitflow.preprocess.errors import (
    BlankImageError,
    EmptyFileError,
    ImageTooLargeError,
    PreprocessError,
    TruncatedImageError,
    UnreadableImageError,
)

MAX_PIXELS: int = 40_000_000
_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")  # never EPS & co: no external tools
_WORK_SIDE = 512  # images are reduced until their long side is below 2x this
_WORDS = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2"}  # 16-bit modes' layout
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


def open_image(data: bytes) -> Image.Image:
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
    check_size(img.size)
    if isinstance(img, JpegImagePlugin.JpegImageFile):
        # Decode straight to grayscale, and at 1/2..1/8 scale when much larger than needed.
        # Each side at least 1: Pillow divides by it (a 48x32552 strip would ask for width 0).
        factor = max(1, max(img.size) // _WORK_SIDE)
        img.draft("L", (max(1, img.size[0] // factor), max(1, img.size[1] // factor)))
    return img


def check_size(size: tuple[int, int]) -> None:
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


def grayscale(img: Image.Image) -> Image.Image:
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
        rgba = img.convert("RGBA")  # premultiplied and palette modes become plain RGBA
        gray = Image.new("L", img.size, 255)
        gray.paste(rgba.convert("L"), mask=rgba.getchannel("A"))  # grey's blend = blend's grey
        return gray
    return img.convert("L")


def _high_depth_gray(img: Image.Image) -> Image.Image:
    """16/32-bit integer and float images, scaled from their nominal range to 8 bits."""
    if img.mode in _WORDS:  # read as they are stored: converting to "F" first costs more
        arr = pixel_array(img, np.dtype(_WORDS[img.mode])) * np.float32(255.0 / 65535.0)
        return Image.fromarray((arr + np.float32(0.5)).astype(np.uint8))
    arr = np.nan_to_num(np.asarray(img.convert("F")), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(arr.max(initial=0.0))
    full_scale = next((s for s in (1.0, 255.0, 65535.0) if top <= s), top)
    return Image.fromarray(np.clip(arr * (255.0 / full_scale) + 0.5, 0, 255).astype(np.uint8))


def _reduce(img: Image.Image) -> Image.Image:
    """Box-reduce very large images so the long side is below 2 * _WORK_SIDE."""
    factor = max(img.size) // _WORK_SIDE
    return img.reduce(factor) if factor >= 2 else img


def pixel_array(img: Image.Image, dtype: type | np.dtype) -> np.ndarray:
    """Read-only (height, width) array of a one-band image; cheaper than np.asarray(img)."""
    return np.frombuffer(img.tobytes(), dtype).reshape(img.height, img.width)
