"""Accuracy per kind of real-world digit image: the seeds' preprocessing vs ours, same model.

    .venv/bin/python benchmarks/robustness.py [--model REF] [--count 1000] [--kinds TEXT]

Each kind is built from MNIST test digits (never seen in training) and encoded as a real file,
then decoded by each preprocessing. REF is a model-store reference (default `production`) or a
path to a .keras file. Prints a markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from digitflow.data import load_mnist
from digitflow.models import load_model
from digitflow.preprocess import PreprocessError, to_mnist
from digitflow.scans import render_scan
from model_store import ModelStore

Kind = Callable[[np.ndarray, np.random.Generator], bytes]


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def restyled(digit: np.ndarray, pen: ImageFilter.Filter) -> np.ndarray:
    """Another writer's pen: thicken or thin the strokes at 4x, back to 28x28."""
    big = Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC).filter(pen)
    return np.asarray(big.resize((28, 28), Image.Resampling.LANCZOS))


def askew(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A writer's slant: the digit itself turned 8-12 degrees, before the scan's own tilt."""
    angle = float(rng.choice([-1, 1]) * rng.uniform(8, 12))
    return np.asarray(Image.fromarray(digit).rotate(angle, Image.Resampling.BILINEAR))


def pencil(scan: Image.Image) -> Image.Image:
    """Grey pencil on light paper: squeeze the scan's range to a low-contrast band."""
    grey = np.asarray(scan.convert("L"), np.float32)
    return Image.fromarray((150 + grey * 0.35).astype(np.uint8))


def shadowed(scan: Image.Image) -> Image.Image:
    """A phone photo: light falling off across the page."""
    pixels = np.asarray(scan, np.float32)
    ramp = np.linspace(1.0, 0.55, pixels.shape[1], dtype=np.float32)[None, :, None]
    return Image.fromarray((pixels * ramp).astype(np.uint8))


def on_scanner(scan: Image.Image, rng: np.random.Generator, bed: tuple[int, int]) -> Image.Image:
    """The whole page laid 8-12 degrees askew on a flatbed scanner, whose bed (tone in `bed`)
    shows in the rotated-in corners and in uneven margins around the page, with sensor noise."""
    angle = float(rng.choice([-1, 1]) * rng.uniform(8, 12))
    tone = int(rng.integers(*bed))
    tilted = scan.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=(tone,) * 3)
    left, top, right, bottom = rng.integers(0, 12, size=4)
    pixels = np.full(
        (tilted.height + top + bottom, tilted.width + left + right, 3), tone, np.float32
    )
    pixels[top : top + tilted.height, left : left + tilted.width] = np.asarray(tilted)
    pixels += rng.normal(0.0, rng.uniform(1.0, 3.0), pixels.shape[:2])[..., None]
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def transparent(scan: Image.Image) -> Image.Image:
    """Ink on a transparent background, as drawing apps export."""
    ink = 255 - np.asarray(ImageOps.autocontrast(scan.convert("L")))
    rgba = np.zeros((*ink.shape, 4), np.uint8)
    rgba[..., 3] = ink
    return Image.fromarray(rgba, "RGBA")


KINDS: dict[str, Kind] = {
    "MNIST form (white on black, 28x28)": lambda d, rng: encoded(Image.fromarray(d)),
    "scan: dark ink on paper, PNG": lambda d, rng: encoded(render_scan(d, rng)),
    "scan, JPEG quality 40": lambda d, rng: encoded(render_scan(d, rng), "JPEG", quality=40),
    "written 8-12 degrees askew": lambda d, rng: encoded(render_scan(askew(d, rng), rng)),
    "scan, blurred (radius 2)": lambda d, rng: encoded(
        render_scan(d, rng).filter(ImageFilter.GaussianBlur(2))
    ),
    "transparent PNG (RGBA)": lambda d, rng: encoded(transparent(render_scan(d, rng))),
    "16-bit greyscale PNG": lambda d, rng: encoded(
        Image.fromarray(np.asarray(render_scan(d, rng).convert("L"), np.uint16) * 257)
    ),
    "thick pen": lambda d, rng: encoded(render_scan(restyled(d, ImageFilter.MaxFilter(7)), rng)),
    "thin pen": lambda d, rng: encoded(render_scan(restyled(d, ImageFilter.MinFilter(5)), rng)),
    "pencil, low contrast": lambda d, rng: encoded(pencil(render_scan(d, rng))),
    "phone photo, uneven light": lambda d, rng: encoded(shadowed(render_scan(d, rng))),
    "page scanned 8-12 degrees askew, dark bed": lambda d, rng: encoded(
        on_scanner(render_scan(d, rng), rng, (0, 110))
    ),
    "page scanned 8-12 degrees askew, white bed": lambda d, rng: encoded(
        on_scanner(render_scan(d, rng), rng, (248, 256))
    ),
}


def seeds_preprocess(data: bytes) -> np.ndarray:
    """The tutorials' way: greyscale, squash to 28x28, invert."""
    image = Image.open(io.BytesIO(data)).convert("L").resize((28, 28))
    return (255 - np.asarray(image, np.float32)) / 255.0


def ours(data: bytes) -> np.ndarray:
    try:
        return to_mnist(data)
    except PreprocessError:  # counted as wrong: an all-black input predicts nothing useful
        return np.zeros((28, 28), np.float32)


def accuracy(model, inputs: list[np.ndarray], labels: np.ndarray) -> float:
    probabilities = model.predict(np.stack(inputs), batch_size=512, verbose=0)
    return float((probabilities.argmax(axis=1) == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="production", help="store reference or .keras path")
    parser.add_argument("--count", type=int, default=1000, help="test digits per kind")
    parser.add_argument("--kinds", default="", help="only kinds whose name contains this text")
    args = parser.parse_args()

    resolved = ModelStore().resolve(args.model)
    model = load_model(resolved.local_path)
    mnist = load_mnist()
    digits, labels = mnist.x_test[: args.count], mnist.y_test[: args.count]
    clean = accuracy(model, [d / 255.0 for d in digits], labels)
    print(f"model {resolved.uri} (version {resolved.version}), {args.count} test digits per kind")
    print(f"MNIST test digits as arrays (reference): {clean:.2%}\n")
    print("| kind | seeds' preprocessing | digitflow preprocessing | gap to reference |")
    print("| --- | --- | --- | --- |")
    for name, make in KINDS.items():
        if args.kinds not in name:
            continue
        rng = np.random.default_rng(0)
        files = [make(d, rng) for d in digits]
        seeds = accuracy(model, [seeds_preprocess(f) for f in files], labels)
        ours_accuracy = accuracy(model, [ours(f) for f in files], labels)
        print(
            f"| {name} | {seeds:.1%} | {ours_accuracy:.1%} | {ours_accuracy - clean:+.1%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
