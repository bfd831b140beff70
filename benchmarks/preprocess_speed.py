"""`to_mnist` speed on one core, by file format/pixel mode, image size and stage.

    .venv/bin/python benchmarks/preprocess_speed.py [--count 600] [--scans DIR] [--repeat 3]

Writes COUNT mixed scans as the bulk benchmark does (`digitflow.scans.write_scans`; reused when
DIR already has them), then times each file's best of REPEAT runs, split into decode (bytes to a
grey working image) and the rest (bed, paper, ink, geometry). Prints markdown tables of mean µs per
image.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

from digitflow.data import load_mnist
from digitflow.preprocess import to_mnist
from digitflow.preprocess.decode import grayscale, open_image
from digitflow.scans import write_scans


def scan_files(folder: Path, count: int) -> list[Path]:
    """COUNT mixed scans in `folder`, written unless already there."""
    if len(list(folder.glob("scan_*"))) < count:
        mnist = load_mnist()
        write_scans(mnist.x_test[:count], mnist.y_test[:count], folder)
    return sorted(folder.glob("scan_*"))[:count]


def best_of(repeat: int, call: Callable[[bytes], object], data: bytes) -> float:
    """Fastest of `repeat` calls, in µs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call(data)
        times.append(time.perf_counter() - start)
    return min(times) * 1e6


def describe(path: Path) -> tuple[str, str]:
    """(format and stored pixel mode, size class by long side) of one file."""
    with Image.open(path) as image:
        kind = f"{image.format} {image.mode}"
        if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            kind += " (EXIF-rotated)"
        side = max(image.size)
    return kind, "< 128" if side < 128 else "128-191" if side < 192 else ">= 192"


def table(title: str, rows: dict[str, list[tuple[float, float]]]) -> None:
    """Markdown table of mean µs (decode, rest, total) per row key."""
    print(
        f"\n| {title} | images | decode µs | rest µs | total µs |\n| --- | --- | --- | --- | --- |"
    )
    for key in sorted(rows):
        decode, total = np.mean(rows[key], axis=0)
        n = len(rows[key])
        print(f"| {key} | {n} | {decode:.0f} | {total - decode:.0f} | {total:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=600, help="scans to time")
    parser.add_argument("--scans", type=Path, help="write into / reuse scans in this folder")
    parser.add_argument("--repeat", type=int, default=3, help="runs per file; the best counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pp-speed-") as tmp:
        files = scan_files(args.scans or Path(tmp), args.count)
        by_kind, by_size = defaultdict(list), defaultdict(list)
        for path in files:
            data = path.read_bytes()
            decode = best_of(args.repeat, lambda d: grayscale(open_image(d)), data)
            total = best_of(args.repeat, to_mnist, data)
            kind, size = describe(path)
            by_kind[kind].append((decode, total))
            by_size[size].append((decode, total))
    table("format, stored mode", by_kind)
    table("long side (px)", by_size)
    table("all", {"mixed scans": [t for ts in by_kind.values() for t in ts]})


if __name__ == "__main__":
    main()
