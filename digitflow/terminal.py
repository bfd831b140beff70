"""A quiet terminal on every host: the libraries' native start-up lines captured at the source.

`quiet_startup()` runs in every entry point (the CLI, the flow modules a Prefect worker imports,
the Beam job's `__main__`) before TensorFlow or Beam are imported:

- `TF_CPP_MIN_LOG_LEVEL=3` hides TensorFlow's C++ log lines once its logging is set up;
- what C++ writes to file descriptor 2 before that (absl's `All log messages before
  absl::InitializeLog()`, the oneDNN notice on CPUs with AVX-512, `Could not find cuda drivers`,
  `failed call to cuInit`, the CPU feature guard) is captured around `import tensorflow`, and
  the same capture wraps other native calls that log (`quiet_native_output`, e.g. LiteRT's
  XNNPACK notice). Which lines a host prints does not matter: every line in absl's or TFLite's
  log format is dropped when the call succeeds, anything else is passed on, and all of it is
  replayed when the call fails;
- Beam's `apitools not found` and `Resource module is not available` warnings are dropped, and
  the root logger gets a stand-in handler, so Beam's `logging.warning` does not install a plain
  one (`basicConfig`) that would make Prefect keep it and drop its own log format.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

# absl/glog (`I0000 00:00:1796391676.479018 2283 port.cc:153] ...`, severities I, W and E; a
# fatal F line is kept), absl's pre-initialisation warning, the CPU feature guard's second line,
# and TFLite's minimal logger (`INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`).
NATIVE_LOG_LINE = re.compile(
    rb"[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: .* rebuild TensorFlow"
    rb"|(?:INFO|WARNING|ERROR): "
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


def not_native_log(output: bytes) -> bytes:
    """`output` without the lines in a native library's log format."""
    lines = output.splitlines(keepends=True)
    return b"".join(line for line in lines if not NATIVE_LOG_LINE.match(line))


@contextmanager
def _fd2_to(target: int) -> Iterator[None]:
    """File descriptor 2 pointed at `target` for the block, then back where it was."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(target, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextmanager
def quiet_native_output() -> Iterator[None]:
    """Capture file descriptor 2 for the block: native log lines are dropped if it succeeds,
    everything is replayed if it raises. Other text written meanwhile is passed on after it."""
    with tempfile.TemporaryFile() as captured:
        failed = True
        try:
            with _fd2_to(captured.fileno()):
                yield
            failed = False
        finally:
            captured.seek(0)
            output = captured.read()
            sys.stderr.buffer.write(output if failed else not_native_log(output))
            sys.stderr.flush()


# Python's default log format, `INFO:beam_jobs.transforms:progress: ...`, as worker processes
# write it once Beam configured their logging.
WORKER_LOG_LINE = re.compile(rb"(DEBUG|INFO|WARNING|ERROR|CRITICAL):([\w.]+):(.*)")


@contextmanager
def worker_output_held(passed: str) -> Iterator[None]:
    """Hold what child processes (Beam's workers, a job server) write to file descriptor 2
    while the block runs: their log lines from loggers under `passed` (a package name) are
    logged here at once, the rest is shown only if the block fails (not on Ctrl-C)."""
    read_end, write_end = os.pipe()
    held: list[bytes] = []

    def relay() -> None:
        with open(read_end, "rb") as lines:
            for line in lines:
                found = WORKER_LOG_LINE.match(line.rstrip(b"\n"))
                if found and found[2].decode().partition(".")[0] == passed:
                    level, name, message = (g.decode(errors="replace") for g in found.groups())
                    logging.getLogger(name).log(logging.getLevelName(level), "%s", message)
                else:
                    held.append(line)

    reader = threading.Thread(target=relay, name="worker-output", daemon=True)
    reader.start()
    failed = False
    try:
        with _fd2_to(write_end):
            os.close(write_end)  # fd 2 is the pipe's only writer here: restoring it ends it
            yield
    except BaseException:
        failed = not _interrupted.is_set()
        raise
    finally:
        reader.join(timeout=5)  # workers that outlive the block keep the pipe open
        if failed:
            sys.stderr.buffer.write(b"".join(held))
            sys.stderr.flush()


class _CapturedStderr(importlib.abc.Loader):
    """Runs a module's import inside `quiet_native_output`."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with quiet_native_output():
            self.loader.exec_module(module)


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


_interrupted = threading.Event()


def _on_interrupt(signum: int, frame: object) -> None:
    """Ctrl-C: from now on the libraries' logs, thread and worker tracebacks are not shown."""
    if not _interrupted.is_set():
        _interrupted.set()
        logging.disable(logging.CRITICAL)
        threading.excepthook = lambda args: None
        sys.unraisablehook = lambda unraisable: None
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the rest of the process)
    raise KeyboardInterrupt


@contextmanager
def interrupt_is_one_line() -> Iterator[None]:
    """Ctrl-C ends the block with one line and exit status 130, after the command's own
    clean-up (its `finally` blocks) has run, whatever the libraries made of the interrupt."""
    terminal = sys.stderr
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_interrupt)
    try:
        yield
    finally:
        if _interrupted.is_set():
            with open(os.devnull, "wb") as devnull:  # workers and threads still stopping
                os.dup2(devnull.fileno(), 2)
            terminal.write("interrupted\n")
            terminal.flush()
            raise SystemExit(130)  # the interrupt wins over the command's outcome


# Prefect's console format, so digitflow's lines read like the flow's around them.
LOG_FORMAT = "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s"


def log_handler() -> logging.Handler:
    """A stderr handler in LOG_FORMAT, for digitflow's own loggers."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
    return handler


def _own_stderr() -> None:
    """Python's `sys.stderr` on its own copy of file descriptor 2, so that capturing fd 2 around
    native calls and worker processes never holds back Python's own lines (logs, errors)."""
    try:
        if sys.stderr is None or sys.stderr.fileno() != 2:
            return  # already moved, or captured (pytest)
    except (AttributeError, OSError, ValueError):
        return
    sys.stderr.flush()
    sys.stderr = os.fdopen(
        os.dup(2),
        "w",
        buffering=1,
        encoding=sys.stderr.encoding,
        errors="backslashreplace",
    )


def _not_worker_chatter(record: logging.LogRecord) -> bool:
    """Beam relays every worker log line to the runner's logger: keep only errors."""
    return record.levelno >= logging.ERROR or not str(record.msg).startswith("Worker:")


def quiet_startup() -> None:
    """Silence the libraries' harmless start-up output; idempotent, cheap (imports nothing)."""
    _own_stderr()
    relayed = logging.getLogger("apache_beam.runners.portability.local_job_service")
    if _not_worker_chatter not in relayed.filters:
        relayed.addFilter(_not_worker_chatter)
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
