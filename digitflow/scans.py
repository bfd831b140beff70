"""Render MNIST digits as realistic scans: dark ink on off-white paper, in mixed file formats.

Used for demos, tests and benchmarks of everything that reads real-world digit images.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageFilter

SCAN_FORMATS: tuple[str, ...] = ("png", "jpg", "bmp", "tiff", "webp", "gif")

# How each format's files are stored, cycled per format: pixel modes, plus a phone-style JPEG
# whose pixels are stored rotated with an EXIF Orientation tag saying how to display them.
_VARIANTS: dict[str, tuple[str, ...]] = {
    "png": ("RGB", "L", "RGBA", "I;16"),
    "jpg": ("RGB", "L", "exif-rotated"),
    "bmp": ("RGB", "L"),
    "tiff": ("RGB", "CMYK"),
    "webp": ("RGB",),
    "gif": ("P",),
}
_SAVE_OPTIONS: dict[str, dict[str, Any]] = {"jpg": {"quality": 90}, "webp": {"quality": 90}}
_INK_RGB = (25, 30, 70)  # ballpoint blue-black, for the transparent-background PNGs
_EXIF_ROTATE_90_CW = 6


def render_scan(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """uint8 28x28 MNIST digit (white on black) -> realistic RGB scan.

    Dark ink on off-white paper with uneven tone, on a 64-256 px canvas with wide random
    margins, off-centre, rotated a few degrees, mildly blurred, with paper noise.
    """
    digit = np.asarray(digit, dtype=np.uint8)
    if digit.ndim != 2:
        raise ValueError(f"digit must be a 2-D array, got shape {digit.shape}")
    side = int(rng.integers(36, 150))  # the 28x28 frame's size: the digit is ~70% of it
    glyph = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    glyph = glyph.rotate(
        float(rng.uniform(-6.0, 6.0)), Image.Resampling.BICUBIC, expand=True, fillcolor=0
    ).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    pressure = np.float32(rng.uniform(0.85, 1.0) / 255)
    coverage = np.multiply(np.asarray(glyph)[..., None], pressure, dtype=np.float32)
    width = int(rng.integers(max(64, glyph.width), 257))
    height = int(rng.integers(max(64, glyph.height), 257))
    top = int(rng.integers(0, height - glyph.height + 1))
    left = int(rng.integers(0, width - glyph.width + 1))

    pixels = _paper(height, width, rng)
    ink = rng.uniform(10.0, 80.0) * np.array([1.0, 1.0, rng.uniform(1.0, 1.6)], np.float32)
    region = pixels[top : top + glyph.height, left : left + glyph.width]
    region += (ink - region) * coverage
    noise = rng.standard_normal((height, width), dtype=np.float32) * rng.uniform(1.0, 5.0)
    pixels += noise[..., None]
    return Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8))


def _paper(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Off-white, slightly warm paper whose brightness drifts across the page: (h, w, 3)."""
    angle = rng.uniform(0.0, 2.0 * np.pi)
    xs = np.arange(width, dtype=np.float32) * np.float32(np.cos(angle) / width)
    ys = np.arange(height, dtype=np.float32) * np.float32(np.sin(angle) / height)
    drift = (ys[:, None] + xs[None, :]) * np.float32(rng.uniform(0.0, 25.0))
    level = np.float32(rng.uniform(205.0, 245.0)) - drift
    tint = np.array([1.0, rng.uniform(0.97, 1.0), rng.uniform(0.9, 1.0)], np.float32)
    return level[..., None] * tint


def write_scans(images: np.ndarray, labels: np.ndarray, out_dir: Path, seed: int = 0) -> Path:
    """Write one scan file per digit, cycling through SCAN_FORMATS and pixel modes.

    Files are named `scan_00000.png`, ... (index = row in `images`); `labels.csv` has header
    `file,label` with file names relative to `out_dir`. Deterministic for a given seed.
    Returns the labels.csv path.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"need (n, 28, 28) images and n labels, got {images.shape}, {labels.shape}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for index, (digit, label) in enumerate(zip(images, labels, strict=True)):
        ext = SCAN_FORMATS[index % len(SCAN_FORMATS)]
        variants = _VARIANTS[ext]
        variant = variants[(index // len(SCAN_FORMATS)) % len(variants)]
        name = f"scan_{index:05d}.{ext}"
        (out_dir / name).write_bytes(encoded(render_scan(digit, rng), ext, variant))
        rows.append((name, int(label)))
    labels_path = out_dir / "labels.csv"
    with labels_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("file", "label"))
        writer.writerows(rows)
    return labels_path


def encoded(scan: Image.Image, ext: str, variant: str = "RGB", **options: Any) -> bytes:
    """An RGB scan as the bytes of an `ext` file (one of SCAN_FORMATS) stored as `variant`: a
    Pillow mode, or 'exif-rotated' (a phone's JPEG). `options` override the format's defaults."""
    options = {**_SAVE_OPTIONS.get(ext, {}), **options}
    if variant == "exif-rotated":
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = _EXIF_ROTATE_90_CW
        options["exif"] = exif
        image = scan.transpose(Image.Transpose.ROTATE_90)  # undone by the viewer's 90° CW turn
    elif variant == "RGBA":
        image = _transparent(scan)
    elif variant == "I;16":
        image = Image.fromarray(np.asarray(scan.convert("L")).astype(np.uint16) * np.uint16(257))
    elif variant == "P":
        image = scan.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    else:
        image = scan.convert(variant)
    buffer = io.BytesIO()
    image.save(buffer, Image.registered_extensions()[f".{ext}"], **options)
    return buffer.getvalue()


def _transparent(scan: Image.Image) -> Image.Image:
    """The ink alone on a transparent background (as drawing apps export): RGBA."""
    gray = np.asarray(scan.convert("L")).astype(np.float32)
    paper, darkest = np.percentile(gray, 90), gray.min()
    alpha = ((paper - 8.0 - gray) / max(paper - 8.0 - darkest, 1.0)).clip(0.0, 1.0)
    rgba = np.zeros((*gray.shape, 4), np.uint8)  # one colour everywhere: only alpha draws
    rgba[..., :3] = _INK_RGB
    rgba[..., 3] = (alpha * 255).round().astype(np.uint8)
    return Image.fromarray(rgba)
