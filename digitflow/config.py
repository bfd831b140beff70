"""Locations and defaults shared by every digitflow component (standard library only)."""

from __future__ import annotations

import os
from pathlib import Path

LOW_CONFIDENCE = 0.8
"""Below it a prediction is doubtful: flagged in bulk results, offered for review, and counted
by drift (the bulk job's default `--min-confidence`, review's default `--below`)."""


def home() -> Path:
    """Root for digitflow's caches and default model store: `$DIGITFLOW_HOME` or `~/.digitflow`."""
    return Path(os.environ.get("DIGITFLOW_HOME") or "~/.digitflow").expanduser()


def data_dir() -> Path:
    """Where the verified MNIST cache lives."""
    return home() / "data"
