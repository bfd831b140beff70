"""Checks on `.keras` archives without importing Keras."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from model_store.errors import CorruptVersion


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
