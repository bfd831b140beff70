"""Classify image files with a model: the tutorials' "predict your own digits", done properly."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitflow.preprocess import IMAGE_EXTENSIONS, PreprocessError, to_mnist


@dataclass(frozen=True)
class Prediction:
    path: str
    digit: int
    confidence: float
    probabilities: tuple[float, ...]


@dataclass(frozen=True)
class Failure:
    path: str
    error: str


def image_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files as given; folders expanded recursively to their image files, sorted."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
        else:
            yield path


def _preprocessed(path: Path) -> np.ndarray | Failure:
    try:
        return to_mnist(path.read_bytes())
    except OSError as error:
        return Failure(str(path), f"cannot read: {error.strerror or error}")
    except PreprocessError as error:
        return Failure(str(path), str(error))


def predict_files(
    model, paths: Iterable[Path], batch_size: int = 256
) -> list[Prediction | Failure]:
    """One result per file, in order; a bad file is a `Failure`, never an exception."""
    results: list[Prediction | Failure] = []
    files = list(paths)
    for start in range(0, len(files), batch_size):
        chunk = [(path, _preprocessed(path)) for path in files[start : start + batch_size]]
        images = [x for _, x in chunk if isinstance(x, np.ndarray)]
        probabilities = iter(model.predict(np.stack(images), verbose=0) if images else [])
        for path, x in chunk:
            if isinstance(x, Failure):
                results.append(x)
                continue
            p = next(probabilities)
            results.append(
                Prediction(str(path), int(p.argmax()), float(p.max()), tuple(map(float, p)))
            )
    return results
