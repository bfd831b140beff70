"""A fixed suite of real-world renderings of MNIST test digits, and a model's accuracy on it.

Each image is an MNIST *test* digit (never trained on) rendered in one of STYLES (file formats
and pixel modes, pens, blur, JPEG, polarity, pencil, photos, pages askew on a scanner), encoded
as a real file in memory and decoded by `to_mnist`, exactly as the bulk job sees images. The
suite is seeded, cached under the data directory and identified by its checksum; `score` gives a
model's accuracy on it, overall and per style.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from digitflow import config
from digitflow.data import Mnist, write_npz
from digitflow.preprocess import PreprocessError, to_mnist
from digitflow.scans import encoded, render_scan

log = logging.getLogger(__name__)

RECIPE_VERSION = 1  # bump whenever a style, the seed or the choice of digits changes
SEED = 19
# 200 images per style, 21 styles. On a 2-core host beside other jobs: built in 19-29 s (once
# per recipe version and MNIST), 0.03 s from the 13 MiB cache; a `fast` cnn scores it in 0.7 s.
DEFAULT_COUNT = 4_200

Style = Callable[[np.ndarray, np.random.Generator], bytes]
"""A uint8 28x28 MNIST digit (white on black) and a generator -> the bytes of an image file."""


def restyled(digit: np.ndarray, pen: ImageFilter.Filter) -> np.ndarray:
    """Another writer's pen: thicken or thin the strokes at 4x, back to 28x28."""
    big = Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC).filter(pen)
    return np.asarray(big.resize((28, 28), Image.Resampling.LANCZOS))


def slanted(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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


def _file(image: Image.Image, ext: str = "png", variant: str = "RGB", **options: Any) -> bytes:
    """`scans.encoded`, with PNGs at zlib level 1: the same pixels as the default level, in a
    third of the time."""
    if ext == "png":
        options.setdefault("compress_level", 1)
    return encoded(image, ext, variant, **options)


def _scan(ext: str, variant: str = "RGB", **options: Any) -> Style:
    """A plain scan (`render_scan`) stored as an `ext` file in `variant` (see `scans.encoded`)."""
    return lambda digit, rng: _file(render_scan(digit, rng), ext, variant, **options)


STYLES: dict[str, Style] = {
    # MNIST's own form: white ink on black, 28x28, the opposite polarity to a scan
    "mnist-form": lambda d, rng: _file(Image.fromarray(d), variant="L"),
    # dark ink on paper, in every format and pixel mode `digitflow data scans` writes
    "png": _scan("png"),
    "png-grey": _scan("png", "L"),
    "png-16bit": _scan("png", "I;16"),
    "png-transparent": _scan("png", "RGBA"),
    "jpeg": _scan("jpg"),
    "jpeg-q40": _scan("jpg", quality=40),
    "jpeg-exif-rotated": _scan("jpg", "exif-rotated"),
    "bmp": _scan("bmp"),
    "gif": _scan("gif", "P"),
    "tiff-cmyk": _scan("tiff", "CMYK"),
    "webp": _scan("webp"),
    # light ink on dark paper (chalk on a board, a negative)
    "negative": lambda d, rng: _file(ImageOps.invert(render_scan(d, rng))),
    "slanted": lambda d, rng: _file(render_scan(slanted(d, rng), rng)),
    "blurred": lambda d, rng: _file(render_scan(d, rng).filter(ImageFilter.GaussianBlur(2))),
    "thick-pen": lambda d, rng: _file(render_scan(restyled(d, ImageFilter.MaxFilter(7)), rng)),
    "thin-pen": lambda d, rng: _file(render_scan(restyled(d, ImageFilter.MinFilter(5)), rng)),
    "pencil": lambda d, rng: _file(pencil(render_scan(d, rng))),
    "photo-shadowed": lambda d, rng: _file(shadowed(render_scan(d, rng)), "jpg"),
    "scanner-dark-bed": lambda d, rng: _file(on_scanner(render_scan(d, rng), rng, (0, 110))),
    "scanner-white-bed": lambda d, rng: _file(on_scanner(render_scan(d, rng), rng, (248, 256))),
}


@dataclass(frozen=True, eq=False)
class Suite:
    """The rendered digits as models take them, with their labels, styles and MNIST test rows."""

    images: np.ndarray  # float32 (n, 28, 28) in [0, 1]; all 0 where `to_mnist` rejected a file
    labels: np.ndarray  # uint8 (n,)
    styles: np.ndarray  # str (n,): a name in STYLES
    indices: np.ndarray  # int (n,): the digit's row in MNIST's test set
    checksum: str  # SHA-256 of images and labels

    def __post_init__(self) -> None:
        for array in (self.images, self.labels, self.styles, self.indices):
            array.setflags(write=False)  # every model is judged on the same images

    def __len__(self) -> int:
        return len(self.labels)


def load_suite(mnist: Mnist, count: int = DEFAULT_COUNT) -> Suite:
    """The suite of `count` images, spread evenly over STYLES: from the cache under the data
    directory when it holds this recipe, MNIST and count intact, else built and cached.

    Image j is style j mod len(STYLES), of the (j div len(STYLES))-th digit of a seeded
    shuffle of the test set: every style renders the same digits. Same bytes on every build
    with the same numpy and Pillow.
    """
    if not len(STYLES) <= count <= len(STYLES) * len(mnist.x_test):
        raise ValueError(
            f"count must be from {len(STYLES)} (one image per style) to "
            f"{len(STYLES) * len(mnist.x_test)}, got {count}"
        )
    path = config.data_dir() / f"robustness-{RECIPE_VERSION}-{count}.npz"  # one file per size
    key = f"{RECIPE_VERSION}:{mnist.checksum}:{count}"
    if path.exists():
        try:
            return _read(path, key)
        except Exception as error:  # a torn, tampered or older file is rebuilt
            log.info("rebuilding the robustness suite: %s", error)
    suite = _build(mnist, count)
    _write(path, key, suite)
    return suite


def _build(mnist: Mnist, count: int) -> Suite:
    names = list(STYLES)
    order = np.random.default_rng(SEED).permutation(len(mnist.x_test))
    styles = np.array([names[j % len(names)] for j in range(count)])
    indices = order[np.arange(count) // len(names)]
    images = np.stack(
        [
            _render(STYLES[style], mnist.x_test[index], np.random.default_rng([SEED, j]))
            for j, (style, index) in enumerate(zip(styles, indices, strict=True))
        ]
    )
    labels = mnist.y_test[indices].astype(np.uint8)
    return Suite(images, labels, styles, indices, _checksum(images, labels))


def _render(style: Style, digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The digit in `style`, as `to_mnist` decodes the file; all 0 where it rejects the file."""
    try:
        return to_mnist(style(digit, rng))
    except PreprocessError:
        return np.zeros((28, 28), np.float32)


def _checksum(images: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(images, np.float32).tobytes())
    digest.update(np.ascontiguousarray(labels, np.uint8).tobytes())
    return digest.hexdigest()


def _read(path: Path, key: str) -> Suite:
    """The cached suite; ValueError unless it was built for `key` and its checksum holds."""
    with np.load(path) as npz:
        if str(npz["key"]) != key:
            raise ValueError(f"{path.name} holds {npz['key']}, not {key}")
        suite = Suite(
            npz["images"], npz["labels"], npz["styles"], npz["indices"], str(npz["checksum"])
        )
    if _checksum(suite.images, suite.labels) != suite.checksum:
        raise ValueError(f"{path.name} does not match its checksum")
    return suite


def _write(path: Path, key: str, suite: Suite) -> None:
    """Write the suite atomically: a reader sees the old file or the whole new one."""
    write_npz(
        path,
        key=key,
        images=suite.images,
        labels=suite.labels,
        styles=suite.styles,
        indices=suite.indices,
        checksum=suite.checksum,
    )


class Predictor(Protocol):
    """A Keras model, or anything else that maps (n, 28, 28) images to (n, 10) probabilities."""

    def predict(self, images: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RobustnessScore:
    """A model's accuracy on a suite: overall, per style, on how many images, which suite."""

    accuracy: float
    per_style: dict[str, float]
    count: int
    suite: str  # the suite's checksum

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RobustnessScore:
        """The score `to_dict` wrote; ValueError naming what is missing or malformed."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a robustness score is a mapping, got {type(data).__name__}")
        missing = [name for name in ("accuracy", "per_style", "count", "suite") if name not in data]
        if missing:
            raise ValueError(f"robustness score lacks {', '.join(missing)}")
        per_style = data["per_style"]
        if not isinstance(per_style, Mapping):
            raise ValueError(f"robustness per_style is not a mapping: {per_style!r}")
        count, suite = data["count"], data["suite"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"robustness count is not a count: {count!r}")
        if not isinstance(suite, str):
            raise ValueError(f"robustness suite is not a checksum: {suite!r}")
        return cls(
            accuracy=_fraction(data["accuracy"], "accuracy"),
            per_style={str(k): _fraction(v, f"accuracy on {k}") for k, v in per_style.items()},
            count=count,
            suite=suite,
        )


def _fraction(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"robustness {what} is not a number in [0, 1]: {value!r}")
    return float(value)


def score(model: Predictor, suite: Suite, batch_size: int = 512) -> RobustnessScore:
    """The model's accuracy on the suite, overall and per style (in STYLES' order).

    `model` is a Keras model or anything whose `predict(images)` gives (n, 10) probabilities
    (it is called once per batch of `batch_size`). An image `to_mnist` rejected (all 0) counts
    as wrong.
    """
    probabilities = _probabilities(model, suite.images, batch_size)
    if probabilities.shape != (len(suite), 10):
        raise ValueError(f"predict gave shape {probabilities.shape}, not ({len(suite)}, 10)")
    right = (probabilities.argmax(axis=1) == suite.labels) & suite.images.any(axis=(1, 2))
    return RobustnessScore(
        accuracy=float(right.mean()),
        per_style={
            str(style): float(right[suite.styles == style].mean())
            for style in dict.fromkeys(suite.styles)
        },
        count=len(suite),
        suite=suite.checksum,
    )


def _probabilities(model: Predictor, images: np.ndarray, batch_size: int) -> np.ndarray:
    import keras  # already loaded wherever a Keras model exists

    if isinstance(model, keras.Model):  # batched by Keras, without a progress bar
        return np.asarray(model.predict(images, batch_size=batch_size, verbose=0))
    batches = range(0, len(images), batch_size)
    return np.concatenate([np.asarray(model.predict(images[i : i + batch_size])) for i in batches])
