"""Locations shared by every digitflow component."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Root for digitflow's caches and default model store: `$DIGITFLOW_HOME` or `~/.digitflow`."""
    return Path(os.environ.get("DIGITFLOW_HOME") or "~/.digitflow").expanduser()


def data_dir() -> Path:
    """Where the verified MNIST cache lives."""
    return home() / "data"
