"""Local files: the one way they are replaced, appended to and locked.

A file is replaced through a temporary file beside it (`temporary`), written, then `commit`:
fsynced, renamed over the target (atomic on POSIX) and its folder fsynced. Readers see the old
file or the new one, never a mix, and after a crash one of them is there whole. Libraries that
write files themselves (Keras, numpy) write the temporary file, then commit it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from digitflow.locations.base import Blob
from digitflow.locations.checksums import copy_stream


def get(path: Path) -> Blob | None:
    """The file's content and its version, the sha256 of that content; None if it is missing."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return Blob(data, hashlib.sha256(data).hexdigest())


@contextmanager
def temporary(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A new name beside `path` (`.NAME.<random>SUFFIX`) to write a file under, removed at the
    end of the block unless `commit` moved the file into place."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{suffix}")
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def commit(written: Path, path: Path) -> None:
    """Put the complete file `written` in place as `path`, atomically and durably."""
    with written.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(written, path)
    fsync_dir(path.parent)


def write(path: Path, data: bytes) -> None:
    """Replace (or create) `path` with `data`, atomically; missing folders are made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with temporary(path) as tmp:
        tmp.write_bytes(data)
        commit(tmp, path)


def copy_file(source: Path, target: Path) -> str:
    """Copy the file `source` to `target`, written in place (a file of a private staging
    folder, committed from there later); the sha256 of the bytes copied."""
    with source.open("rb") as src, target.open("wb") as dst:
        return copy_stream(src, dst)


def append_line(path: Path, line: str) -> None:
    """Append `line` and a newline to `path` (created if missing) in one write, fsynced."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        # A crash mid-append leaves a last line without its newline: start a new line so this
        # one is not glued to that fragment (which readers then report, not lose).
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        os.write(fd, (("\n" if torn else "") + line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on the file `path` (created if missing) for the block; it is
    released when the block ends or the process dies."""
    with path.open("ab") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def fsync_dir(path: Path) -> None:
    """Persist a change to a folder's entries (a file created, renamed or removed) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
