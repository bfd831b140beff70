"""Classify image files with a model: the tutorials' "predict your own digits", done properly."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from digitflow.listing import Entry, Kind, UnreadableError, path_text, read_file, walk
from digitflow.preprocess import PreprocessError, to_mnist


@dataclass(frozen=True)
class Prediction:
    path: str  # as `digitflow.listing.path_text` writes it
    digit: int
    confidence: float
    probabilities: tuple[float, ...]


@dataclass(frozen=True)
class Failure:
    path: str
    error: str


def image_files(paths: Iterable[str]) -> Iterator[Entry]:
    """Files as given; folders walked (`digitflow.listing.walk`) to their image files and the
    entries that cannot be read, which `predict_files` reports as failures."""
    for path in paths:
        if os.path.isdir(path):
            yield from (entry for entry in walk(path) if entry.kind is not Kind.OTHER)
        else:
            yield Entry(path, Kind.IMAGE)


def _preprocessed(entry: Entry) -> np.ndarray | Failure:
    if entry.kind is Kind.UNREADABLE:
        return Failure(path_text(entry.path), entry.reason)
    try:
        return to_mnist(read_file(entry.path))
    except (UnreadableError, PreprocessError) as error:
        return Failure(path_text(entry.path), str(error))


def predict_files(
    model, entries: Iterable[Entry], batch_size: int = 256
) -> list[Prediction | Failure]:
    """One result per entry, in order; a bad file is a `Failure`, never an exception."""
    results: list[Prediction | Failure] = []
    files = list(entries)
    for start in range(0, len(files), batch_size):
        chunk = [(entry, _preprocessed(entry)) for entry in files[start : start + batch_size]]
        images = [x for _, x in chunk if isinstance(x, np.ndarray)]
        probabilities = iter(model.predict(np.stack(images), verbose=0) if images else [])
        for entry, x in chunk:
            if isinstance(x, Failure):
                results.append(x)
                continue
            p = next(probabilities)
            results.append(
                Prediction(
                    path_text(entry.path), int(p.argmax()), float(p.max()), tuple(map(float, p))
                )
            )
    return results
