"""Checks on `.keras` archives without importing Keras, and the one place that loads them."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_store.errors import CorruptVersion

if TYPE_CHECKING:
    import keras


def read_config(path: Path, what: str) -> dict[str, Any]:
    """The model config inside a `.keras` archive; CorruptVersion if it is not one."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise CorruptVersion(f"{what}: not a valid .keras model file ({exc})") from None
    if not isinstance(config, dict):
        raise CorruptVersion(f"{what}: not a valid .keras model file (config is not an object)")
    return config


def describe(config: dict[str, Any]) -> str:
    """Short architecture summary from a model config, e.g. `Sequential(InputLayer, Dense)`."""
    inner = config.get("config")
    layers = inner.get("layers", []) if isinstance(inner, dict) else []
    names = ", ".join(str(lay.get("class_name", "?")) for lay in layers if isinstance(lay, dict))
    return f"{config.get('class_name', '?')}({names})"


def load(path: Path, what: str) -> keras.Model:
    """Load with Keras' safe mode (no arbitrary code from lambdas); CorruptVersion on failure."""
    from digitflow.models import ModelLoadError, load_model

    try:
        return load_model(path)
    except ModelLoadError as exc:
        raise CorruptVersion(f"{what}: {exc}") from None
