"""The storage layer under the store: local directories here, s3:// and gs:// in object_storage.

Names passed to a `Storage` are relative, `/`-separated and built by the store itself from
validated parts (version numbers, fixed file names), never from user input. Nothing is ever
locked for long: every change is a conditional write that raises WriteConflict, changing
nothing, when its target changed since it was read.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from model_store.errors import StoreError
from model_store.files import WriteConflict, is_uri, verified_file
from model_store.object_storage import ObjectStorage, download, model_cache

HISTORY_FILE = "history.jsonl"


class Storage(Protocol):
    """Operations the store needs; each implementation documents its atomicity."""

    root: str

    def uri(self, name: str) -> str:
        """Full path or URI of `name`."""
        ...

    def read_versioned(self, name: str) -> tuple[bytes | None, str | None]:
        """Content of `name` (None if it does not exist) and the token `write_if` expects."""
        ...

    def write_if(self, name: str, data: bytes, token: str | None, *, history: str | None) -> None:
        """Replace `name` if it is still as read with `token` (None: still absent).

        Readers see the old or the new content, never a mix. Raises WriteConflict, changing
        nothing, if `name` changed since. `history`, one JSON line, is then recorded in the
        alias history, in the order of the writes.
        """
        ...

    def children(self, name: str) -> list[str]:
        """Names of the entries directly under the directory `name`."""
        ...

    def staging(self) -> AbstractContextManager[Path]:
        """A private local directory to assemble a version in; removed afterwards."""
        ...

    def publish(self, staged: Path, name: str, *, marker: str) -> None:
        """Make the staged files appear under `name`, `marker` (the commit) last.

        Raises WriteConflict, writing nothing, if another writer has taken `name`.
        """
        ...

    def fetch(self, name: str, sha256: str) -> Path:
        """A local file with the verified content of `name`.

        Raises FileNotFoundError if it is missing and ChecksumMismatch if it differs.
        """
        ...

    def check_writable(self) -> None:
        """StoreError unless files can be created under the root; leaves nothing behind."""
        ...

    def read_history(self) -> list[str]:
        """All non-blank history lines, oldest first; bytes that are not UTF-8 are replaced."""
        ...


def open_storage(root: str) -> Storage:
    """Local storage for a path, object storage for an s3:// or gs:// URI."""
    if is_uri(root):
        return ObjectStorage(root)
    return LocalStorage(Path(root).expanduser())


def fetch_file(uri: str, sha256: str | None) -> Path:
    """The file at `uri` as a local file whose content has `sha256` (unchecked when None).

    How Beam workers get the model a job was pinned to, the way `Storage.fetch` gets a store's
    versions: a local path is checked where it is; an s3:// or gs:// URI is downloaded into the
    model cache once (shared with `ObjectStorage`), and the cached copy is checked on every
    call. Raises FileNotFoundError if the file is missing and ChecksumMismatch if its content
    differs.
    """
    if is_uri(uri):
        return download(uri, sha256, model_cache())
    return verified_file(Path(uri), sha256)


def fsync_dir(path: Path) -> None:
    """Persist a directory entry change (create, rename) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def _token(data: bytes | None) -> str | None:
    """A local file's compare-and-swap token: the sha256 of its content, None when absent."""
    return None if data is None else hashlib.sha256(data).hexdigest()


class LocalStorage:
    """A store in a local directory.

    A conditional write takes an exclusive `flock` on `.lock`, compares the file's content
    with the token, writes a temporary file, fsyncs it and `os.replace`s it over the old one
    (atomic on POSIX). A version's number is claimed with `mkdir` (which fails if another
    writer made it first); its files are then renamed in from `.staging/`, the marker last.
    A root that exists and is not a directory is refused when the storage is opened.
    """

    def __init__(self, root: Path) -> None:
        self._root = root.absolute()
        self.root = str(self._root)
        if self._root.exists() and not self._root.is_dir():
            raise self._not_a_directory()

    def uri(self, name: str) -> str:
        return str(self._root / name)

    def read_versioned(self, name: str) -> tuple[bytes | None, str | None]:
        data = self._read(name)
        return data, _token(data)

    def write_if(self, name: str, data: bytes, token: str | None, *, history: str | None) -> None:
        with self._lock():
            if _token(self._read(name)) != token:
                raise WriteConflict(self.uri(name))
            self._replace(name, data)
            if history is not None:
                self._append_history(history)

    def children(self, name: str) -> list[str]:
        directory = self._root / name
        return [entry.name for entry in directory.iterdir()] if directory.is_dir() else []

    @contextmanager
    def staging(self) -> Iterator[Path]:
        staged = self._root / ".staging" / uuid.uuid4().hex
        staged.mkdir(parents=True)
        try:
            yield staged
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def publish(self, staged: Path, name: str, *, marker: str) -> None:
        target = self._root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.mkdir()  # the claim: exactly one writer creates it
        except FileExistsError:
            raise WriteConflict(str(target)) from None
        fsync_dir(target.parent)
        for path in sorted(staged.iterdir(), key=lambda path: path.name == marker):
            _fsync_file(path)
            os.rename(path, target / path.name)
            fsync_dir(target)

    def fetch(self, name: str, sha256: str) -> Path:
        return verified_file(self._root / name, sha256)

    def check_writable(self) -> None:
        # Creates the root (and missing parents), as the first registration would; a probe
        # file shows that files can be created there (permissions, read-only mounts).
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            probe = self._root / f".write-check-{uuid.uuid4().hex}"
            probe.touch(exist_ok=False)
            probe.unlink()
        except FileExistsError:
            raise self._not_a_directory() from None
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise StoreError(f"store root {self.root} is not writable ({reason})") from None

    def read_history(self) -> list[str]:
        data = self._read(HISTORY_FILE)
        text = "" if data is None else data.decode(errors="replace")
        return [line for line in text.split("\n") if line.strip()]

    def _not_a_directory(self) -> StoreError:
        return StoreError(f"store root {self.root} is not a directory")

    def _read(self, name: str) -> bytes | None:
        try:
            return (self._root / name).read_bytes()
        except FileNotFoundError:
            return None

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self._root.mkdir(parents=True, exist_ok=True)
        with (self._root / ".lock").open("ab") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes or the process dies
            yield

    def _replace(self, name: str, data: bytes) -> None:
        path = self._root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)

    def _append_history(self, line: str) -> None:
        fd = os.open(self._root / HISTORY_FILE, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            # A crash mid-append leaves a last line without its newline: start a new line so
            # this entry is not glued to that fragment (which readers then report, not lose).
            torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            os.write(fd, (("\n" if torn else "") + line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
