"""Fuzzing `to_mnist`: thousands of damaged files and odd images, each either an MNIST field or a
typed PreprocessError, and none taking longer than a few seconds.

Two sources: seeded byte mutations of real files in every supported format (bit flips,
truncation, insertion, deletion, duplicated chunks, header fields, PNG chunks with valid CRCs),
and Hypothesis-generated images of every Pillow mode and odd sizes (pages askew on a scanner's
bed among them), as images or encoded. Run
with `-s` to see each test's tally: inputs, outcomes by type, and the slowest input.
"""

from __future__ import annotations

import faulthandler
import io
import random
import signal
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageDraw

from digitflow.preprocess import PreprocessError, to_mnist

SEED = 20250131
MUTANTS_PER_FILE = 150
LIMIT_S = 5.0  # per input: a bound on correctness (no hang), not a speed target
BACKSTOP_S = 600  # a hang inside C code ignores signals: dump every stack and exit instead
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODES = [
    "1", "L", "P", "RGB", "RGBA", "RGBX", "RGBa", "LA", "La", "PA",
    "I;16", "I;16B", "I;16L", "I", "F", "CMYK", "YCbCr", "LAB", "HSV",
]  # fmt: skip
EXIF_FORMATS = {"PNG", "JPEG", "WEBP", "TIFF"}


class Hang(BaseException):
    """An input ran past LIMIT_S; a BaseException so that no `except Exception` hides it."""


@dataclass
class Tally:
    """Outcomes of fuzzed inputs: counts by type, the slowest input, what went wrong."""

    name: str
    outcomes: Counter[str] = field(default_factory=Counter)
    slowest: tuple[float, str] = (0.0, "")
    failures: list[str] = field(default_factory=list)

    def run(self, label: str, image: bytes | Image.Image) -> str | None:
        """Preprocess one input; return what was wrong with the outcome, or None."""
        started = time.perf_counter()
        problem = None
        try:
            with time_limit(LIMIT_S):
                out = to_mnist(image)
        except PreprocessError as error:
            self.outcomes[type(error).__name__] += 1
        except Hang:
            problem = f"{label}: no result within {LIMIT_S:.0f} s"
        except Exception as error:  # the defect this fuzz looks for
            problem = f"{label}: {error!r}"
        else:
            self.outcomes["ok"] += 1
            problem = field_problem(out)
            problem = problem and f"{label}: {problem}"
        elapsed = (time.perf_counter() - started) * 1000
        self.slowest = max(self.slowest, (elapsed, label))
        if problem:
            self.failures.append(problem)
        return problem

    def report(self) -> str:
        """One line: inputs tried, outcomes by type, the slowest input."""
        counts = ", ".join(f"{name} {n}" for name, n in self.outcomes.most_common())
        total = self.outcomes.total() + len(self.failures)
        return (
            f"{self.name}: {total} inputs: {counts}; failures {len(self.failures)}; "
            f"slowest {self.slowest[0]:.0f} ms ({self.slowest[1]})"
        )


def field_problem(out: object) -> str | None:
    """What keeps `out` from being an MNIST field (28x28 float32 in [0, 1]), or None."""
    if not isinstance(out, np.ndarray) or out.shape != (28, 28) or out.dtype != np.float32:
        return f"returned {type(out).__name__} {getattr(out, 'shape', '')}"
    if not np.isfinite(out).all() or out.min() < 0.0 or out.max() > 1.0:
        return f"values outside [0, 1]: {out.min()} .. {out.max()}"
    return None


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise Hang in the main thread if the block runs longer than `seconds`."""

    def expire(signum: int, frame: object) -> None:
        raise Hang

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def backstop() -> Iterator[None]:
    """Exit with every thread's stack if the whole test hangs where signals cannot reach."""
    faulthandler.dump_traceback_later(BACKSTOP_S, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


# --- seed files -------------------------------------------------------------------------------


PAGE = (48, 40)
STRIP = (40, 24000)  # a long, thin scan: Pillow's JPEG draft divided by zero on such sizes


def scan(size: tuple[int, int]) -> Image.Image:
    """A scan of a 7 filling the page: dark strokes on light, slightly uneven paper."""
    width, height = size
    paper = np.linspace(235, 205, width)[None, :] + np.zeros((height, 1))
    image = Image.fromarray(paper.astype(np.uint8))
    stroke = [(0.25, 0.2), (0.7, 0.2), (0.4, 0.8)]
    ImageDraw.Draw(image).line([(x * width, y * height) for x, y in stroke], fill=35, width=4)
    return image


def in_mode(image: Image.Image, mode: str) -> Image.Image:
    """`image` converted to `mode`, including the high-depth modes files carry."""
    grey = np.asarray(image.convert("L"))
    if mode.startswith("I;16"):
        return Image.fromarray(grey.astype(np.uint16) * np.uint16(257)).convert(mode)
    if mode == "F":
        return Image.fromarray(grey.astype(np.float32) / 255)
    if mode == "P":
        return image.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return image.convert("RGB").convert(mode)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    """`image` saved as a `fmt` file."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def exif(orientation: int) -> Image.Exif:
    """EXIF data with just an orientation tag."""
    data = Image.Exif()
    data[ExifTags.Base.Orientation] = orientation
    return data


SEED_FILES: list[tuple[str, str, dict[str, object], tuple[int, int]]] = [
    ("PNG", "L", {}, PAGE),
    ("PNG", "RGB", {"exif": exif(6)}, PAGE),
    ("PNG", "RGBA", {}, PAGE),
    ("PNG", "P", {"transparency": 0}, PAGE),
    ("PNG", "1", {}, PAGE),
    ("PNG", "I;16", {}, PAGE),
    ("PNG", "LA", {}, PAGE),
    ("JPEG", "L", {"quality": 90}, PAGE),
    ("JPEG", "RGB", {"progressive": True}, PAGE),
    ("JPEG", "RGB", {"exif": exif(8)}, PAGE),
    ("JPEG", "CMYK", {}, PAGE),
    ("GIF", "P", {"transparency": 0}, PAGE),
    ("GIF", "L", {}, PAGE),
    ("TIFF", "L", {"compression": "tiff_lzw"}, PAGE),
    ("TIFF", "RGB", {"compression": "tiff_adobe_deflate"}, PAGE),
    ("TIFF", "CMYK", {}, PAGE),
    ("TIFF", "I;16", {}, PAGE),
    ("TIFF", "F", {}, PAGE),
    ("TIFF", "1", {"compression": "packbits"}, PAGE),
    ("WEBP", "RGB", {"quality": 80}, PAGE),
    ("WEBP", "RGBA", {"lossless": True}, PAGE),
    ("BMP", "L", {}, PAGE),
    ("BMP", "RGB", {}, PAGE),
    ("BMP", "P", {}, PAGE),
    ("BMP", "1", {}, PAGE),
    ("JPEG", "L", {}, STRIP),
    ("PNG", "L", {}, STRIP[::-1]),
]


# --- mutations --------------------------------------------------------------------------------

Mutator = Callable[[bytearray, random.Random], bytearray]


def flip_bits(data: bytearray, rng: random.Random) -> bytearray:
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return data


def set_bytes(data: bytearray, rng: random.Random) -> bytearray:
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] = rng.choice((0, 0x7F, 0x80, 0xFF, rng.randrange(256)))
    return data


def truncate(data: bytearray, rng: random.Random) -> bytearray:
    return data[: rng.randrange(len(data))]


def insert(data: bytearray, rng: random.Random) -> bytearray:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.randbytes(rng.randint(1, 64)) + data[at:]


def delete(data: bytearray, rng: random.Random) -> bytearray:
    start = rng.randrange(len(data))
    return data[:start] + data[start + rng.randint(1, 256) :]


def duplicate(data: bytearray, rng: random.Random) -> bytearray:
    start = rng.randrange(len(data))
    chunk = data[start : start + rng.randint(1, 256)]
    at = rng.randrange(len(data) + 1)
    return data[:at] + chunk + data[at:]


def header_field(data: bytearray, rng: random.Random) -> bytearray:
    """An extreme 1-, 2- or 4-byte integer, either byte order, in the first 64 bytes."""
    width = rng.choice((1, 2, 4))
    value = rng.choice(INTERESTING) & ((1 << (8 * width)) - 1)
    at = rng.randrange(max(1, min(len(data), 64) - width + 1))
    data[at : at + width] = value.to_bytes(width, rng.choice(("big", "little")))
    return data


def png_chunk(data: bytearray, rng: random.Random) -> bytearray:
    """Change a field of one PNG chunk and fix its CRC, so decoders accept it and go deeper."""
    chunks, at = [], len(PNG_SIGNATURE)
    while data.startswith(PNG_SIGNATURE) and at + 12 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        if length == 0 or at + 12 + length > len(data):
            break
        chunks.append((at, length))
        at += 12 + length
    if not chunks:
        return header_field(data, rng)
    start, length = rng.choice(chunks)
    body = bytearray(data[start + 8 : start + 8 + length])
    body = header_field(body, rng) if length >= 4 else flip_bits(body, rng)
    crc = struct.pack(">I", zlib.crc32(data[start + 4 : start + 8] + body))
    return data[: start + 8] + body + crc + data[start + 8 + length + 4 :]


MUTATORS: list[Mutator] = [
    flip_bits, set_bytes, truncate, insert, delete, duplicate, header_field, png_chunk,
]  # fmt: skip


def mutants(data: bytes, seed: int) -> Iterator[tuple[str, bytes]]:
    """MUTANTS_PER_FILE reproducible mutants of `data`: one to three mutations each."""
    rng = random.Random(seed)
    for index in range(MUTANTS_PER_FILE):
        mutant, names = bytearray(data), []
        for mutator in rng.choices(MUTATORS, k=rng.choice((1, 1, 2, 3))):
            if mutant:
                mutant = mutator(mutant, rng)
                names.append(mutator.__name__)
        yield f"#{index} {'+'.join(names)}", bytes(mutant)


@pytest.mark.filterwarnings("ignore")  # Pillow and numpy warn about some of what they meet
def test_mutated_files_give_a_field_or_a_typed_error() -> None:
    tally = Tally("mutated files")
    with backstop():
        for number, (fmt, mode, options, size) in enumerate(SEED_FILES):
            data = encode(in_mode(scan(size), mode), fmt, **options)
            assert field_problem(to_mnist(data)) is None  # the unmutated file is a good digit
            for label, mutant in mutants(data, SEED + number):
                tally.run(f"{fmt} {mode} {size[0]}x{size[1]} {label}", mutant)
    print(tally.report())
    assert not tally.failures, "\n".join(tally.failures[:20])
    tried = tally.outcomes.total()
    assert tried == len(SEED_FILES) * MUTANTS_PER_FILE
    # The mutations reach every outcome, not just the first parser check.
    assert {"ok", "UnreadableImageError", "TruncatedImageError"} <= tally.outcomes.keys()
    assert tally.outcomes["ok"] < tried


# --- generated images -------------------------------------------------------------------------


@st.composite
def odd_images(draw: st.DrawFn) -> tuple[str, bytes | Image.Image]:
    """An image of any mode and a small or empty size: noise, strokes on a plain page, or such
    a page turned askew on a scanner's bed of another tone; handed over as a Pillow image or
    encoded in a supported format."""
    mode = draw(st.sampled_from(MODES))
    size = (draw(st.integers(0, 40)), draw(st.integers(0, 40)))
    kind = draw(st.sampled_from(["noise", "strokes", "page on a bed"]))
    if kind == "noise":
        length = len(Image.new(mode, size).tobytes())
        image = Image.frombytes(mode, size, draw(st.binary(min_size=length, max_size=length)))
    else:
        page = Image.new("L", size, draw(st.integers(0, 255)))
        pen = ImageDraw.Draw(page)
        ink, points = draw(st.integers(0, 255)), st.tuples(st.integers(-5, 45), st.integers(-5, 45))
        for stroke in draw(st.lists(st.lists(points, min_size=2, max_size=4), max_size=3)):
            pen.line(stroke, fill=ink, width=draw(st.integers(1, 6)))
        if kind == "page on a bed":
            angle, bed = draw(st.floats(-30, 30)), draw(st.integers(0, 255))
            page = page.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=bed)
        image = in_mode(page, mode)
    label = f"{kind} {mode} {image.size[0]}x{image.size[1]}"
    fmt = draw(st.sampled_from(["image", "PNG", "JPEG", "GIF", "TIFF", "WEBP", "BMP"]))
    if fmt == "image":
        return label, image
    options = {"exif": exif(draw(st.integers(0, 9)))} if fmt in EXIF_FORMATS else {}
    try:
        return f"{label} as {fmt}", encode(image, fmt, **options)
    except Exception:  # Pillow cannot write this mode or size in this format (0x0 WebP...)
        return f"{label} (no {fmt})", image


@pytest.mark.filterwarnings("ignore")
def test_generated_images_give_a_field_or_a_typed_error() -> None:
    tally = Tally("generated images")

    @settings(
        max_examples=1000,
        deadline=None,  # time is bounded per input by LIMIT_S instead
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=odd_images())
    def check(case: tuple[str, bytes | Image.Image]) -> None:
        problem = tally.run(*case)
        assert problem is None, problem  # Hypothesis then shrinks it to a minimal example

    with backstop():
        check()
    print(tally.report())
    assert tally.outcomes.total() >= 1000
    assert {"ok", "BlankImageError"} <= tally.outcomes.keys()
