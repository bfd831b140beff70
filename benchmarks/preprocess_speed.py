"""`to_mnist` CPU time on one core: against a bare decode of the same bytes, by file format, by
stored pixel mode, image size and stage.

    .venv/bin/python benchmarks/preprocess_speed.py [--count 600] [--scans DIR] [--repeat 5]

Writes COUNT mixed scans as the bulk benchmark does (`digitflow.scans.write_scans`; reused when
DIR already has them). All times are CPU time (`time.process_time`), so other processes on the
host inflate them less than wall time; each is the best of REPEAT runs.

The first table, headed with the host's CPU model, its SIMD flags (avx2, avx512f, avx512_bf16)
and this command, gives per format: the CPU per image of each candidate library's fastest decode
of the same bytes to 8-bit grey at full size (Pillow: open, JPEG drafted to grey, load, convert
to "L"; OpenCV's `imdecode(IMREAD_GRAYSCALE)` as well when `cv2` can be imported, which
digitflow does not need), `to_mnist`'s CPU per image, and `to_mnist` over the fastest decode.
Each file's best of REPEAT rounds counts, the candidates taking turns on it in each round.

The other tables split each file's best time into decode (`open_image` and `grayscale`: bytes to
the upright grey working image) and the rest (bed, paper, ink, geometry), in mean µs per image.
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import sys
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

_FLAGS = ("avx2", "avx512f", "avx512_bf16")


def scan_files(folder: Path, count: int) -> list[Path]:
    """COUNT mixed scans in `folder`, written unless already there."""
    if len(list(folder.glob("scan_*"))) < count:
        mnist = load_mnist()
        write_scans(mnist.x_test[:count], mnist.y_test[:count], folder)
    return sorted(folder.glob("scan_*"))[:count]


def pillow_gray(data: bytes) -> Image.Image:
    """Pillow's fastest full-size decode of `data` to 8-bit grey."""
    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG":
        image.draft("L", image.size)  # the decoder's own grey output: no colour conversion
    image.load()
    return image if image.mode == "L" else image.convert("L")


def decoders() -> dict[str, Callable[[bytes], object]]:
    """Each candidate library's fastest decode to grey, by name."""
    candidates: dict[str, Callable[[bytes], object]] = {"Pillow": pillow_gray}
    try:
        import cv2
    except ImportError:
        return candidates
    cv2.setNumThreads(1)
    flags = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION
    candidates["OpenCV"] = lambda data: cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    return candidates


def interleaved_cpu(
    repeat: int, calls: dict[str, Callable[[bytes], object]], files: list[bytes]
) -> dict[str, float]:
    """{name: mean over `files` of each file's best CPU µs}: the calls take turns on each file,
    `repeat` rounds, so a busy moment on the host costs every call alike and the best round
    counts."""
    total = dict.fromkeys(calls, 0.0)
    for data in files:
        best = dict.fromkeys(calls, float("inf"))
        for _ in range(repeat):
            for name, call in calls.items():
                start = time.process_time()
                call(data)
                best[name] = min(best[name], time.process_time() - start)
        for name in calls:
            total[name] += best[name]
    return {name: seconds / len(files) * 1e6 for name, seconds in total.items()}


def best_of(repeat: int, call: Callable[[bytes], object], data: bytes) -> float:
    """Fastest of `repeat` calls, in CPU µs."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        call(data)
        times.append(time.process_time() - start)
    return min(times) * 1e6


def cpu_line() -> str:
    """The CPU's model and which of _FLAGS it has, from /proc/cpuinfo."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    have = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in _FLAGS)
    return f"{model}; {have}"


def describe(path: Path) -> tuple[str, str]:
    """(format and stored pixel mode, size class by long side) of one file."""
    with Image.open(path) as image:
        kind = f"{image.format} {image.mode}"
        if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            kind += " (EXIF-rotated)"
        side = max(image.size)
    return kind, "< 128" if side < 128 else "128-191" if side < 192 else ">= 192"


def ratio_table(by_format: dict[str, list[bytes]], repeat: int) -> None:
    """Markdown table: per format, each decoder's CPU µs per image, to_mnist's, the ratio."""
    candidates = decoders()
    print(f"\nCPU: {cpu_line()}")
    print(f"Command: {shlex.join([os.path.relpath(sys.executable), *sys.argv])}\n")
    names = " | ".join(f"{name} decode µs" for name in candidates)
    print(f"| format | images | {names} | to_mnist µs | to_mnist / fastest decode |")
    print("| --- " * (len(candidates) + 4) + "|")
    for fmt in sorted(by_format):
        files = by_format[fmt]
        best = interleaved_cpu(repeat, {**candidates, "to_mnist": to_mnist}, files)
        total = best.pop("to_mnist")
        decodes = " | ".join(f"{best[name]:.0f}" for name in candidates)
        fastest = min(best.values())
        print(f"| {fmt} | {len(files)} | {decodes} | {total:.0f} | {total / fastest:.2f} |")


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
    parser.add_argument("--repeat", type=int, default=5, help="runs per file; the best counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pp-speed-") as tmp:
        files = scan_files(args.scans or Path(tmp), args.count)
        by_format = defaultdict(list)
        by_kind, by_size = defaultdict(list), defaultdict(list)
        for path in files:
            data = path.read_bytes()
            by_format[describe(path)[0].split()[0]].append(data)
            decode = best_of(args.repeat, lambda d: grayscale(open_image(d)), data)
            total = best_of(args.repeat, to_mnist, data)
            kind, size = describe(path)
            by_kind[kind].append((decode, total))
            by_size[size].append((decode, total))
    ratio_table(by_format, args.repeat)
    table("format, stored mode", by_kind)
    table("long side (px)", by_size)
    table("all", {"mixed scans": [t for ts in by_kind.values() for t in ts]})


if __name__ == "__main__":
    main()
