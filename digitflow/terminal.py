"""A quiet terminal: TensorFlow's and Beam's harmless start-up lines silenced at the source.

`quiet_startup()` runs in every entry point (the CLI, the flow modules a Prefect worker imports,
the Beam job's `__main__`) before TensorFlow or Beam are imported:

- `TF_CPP_MIN_LOG_LEVEL=3` hides TensorFlow's C++ info/warning/error lines, among them the
  alarming `failed call to cuInit ... UNKNOWN ERROR (303)` on machines without a GPU;
- the lines TensorFlow's C++ start-up writes before that setting applies (`All log messages
  before absl::InitializeLog()`, `Could not find cuda drivers`) are caught while `tensorflow`
  is imported; everything else written meanwhile is passed on, and all of it if the import
  fails;
- Beam's `apitools not found` and `Resource module is not available` warnings are dropped, and
  the root logger gets a stand-in handler, so Beam's `logging.warning` does not install a plain
  one (`basicConfig`) that would make Prefect keep it and drop its own log format.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from types import ModuleType

HARMLESS_NATIVE_LINES = (
    b"All log messages before absl::InitializeLog() is called",
    b"Could not find cuda drivers on your machine",
)
HARMLESS_WARNINGS = (
    "apitools not found",  # Beam's BigQuery client, which digitflow does not use
    "Resource module is not available",  # Beam's memory probe, on some platforms
)


def _not_harmless(record: logging.LogRecord) -> bool:
    return not any(text in str(record.msg) for text in HARMLESS_WARNINGS)


class _StandInHandler(logging.StreamHandler):
    """Root's handler until Prefect configures logging. Prefect replaces root handlers whose
    class name starts with `_` and keeps (with their format) any other."""


def _harmless_native(line: bytes) -> bool:
    return any(text in line for text in HARMLESS_NATIVE_LINES)


class _CapturedStderr(importlib.abc.Loader):
    """Runs a module's import with file descriptor 2 sent to a temporary file."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            failed = True
            try:
                self.loader.exec_module(module)
                failed = False
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                captured.seek(0)
                lines = captured.read().splitlines(keepends=True)
                kept = [ln for ln in lines if failed or not _harmless_native(ln)]
                sys.stderr.buffer.write(b"".join(kept))
                sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` once, through the other finders, with a stderr-capturing loader."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _CapturedStderr(spec.loader)
        return spec


# Prefect's console format, so digitflow's lines read like the flow's around them.
LOG_FORMAT = "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s"


def log_handler() -> logging.Handler:
    """A stderr handler in LOG_FORMAT, for digitflow's own loggers."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
    return handler


def quiet_startup() -> None:
    """Silence the libraries' harmless start-up output; idempotent, cheap (imports nothing)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # A temporary Prefect server would log an ERROR for each telemetry call it cannot make.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    root = logging.getLogger()
    if _not_harmless not in root.filters:
        root.addFilter(_not_harmless)
    if not root.handlers:
        handler = _StandInHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
    if "tensorflow" not in sys.modules and not any(
        isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
