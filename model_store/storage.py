"""The file-system layer under the store: local directories here, object stores via Beam.

Names passed to a `Storage` are relative, `/`-separated and built by the store itself from
validated parts (version numbers, fixed file names), never from user input.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from model_store.errors import StoreError
from model_store.files import is_uri, verified_file


class Storage(Protocol):
    """Operations the store needs; each implementation documents its atomicity."""

    root: str

    def uri(self, name: str) -> str:
        """Full path or URI of `name`."""
        ...

    def read(self, name: str) -> bytes | None:
        """Content of `name`, or None if it does not exist."""
        ...

    def write(self, name: str, data: bytes) -> None:
        """Replace `name` so that readers see either the old or the new content, never a mix."""
        ...

    def children(self, name: str) -> list[str]:
        """Names of the entries directly under the directory `name`."""
        ...

    def staging(self) -> AbstractContextManager[Path]:
        """A private local directory to assemble a version in; removed afterwards."""
        ...

    def publish(self, staged: Path, name: str, *, marker: str) -> None:
        """Make the staged directory appear as `name`; `marker` is the file that commits it."""
        ...

    def fetch(self, name: str, sha256: str) -> Path:
        """A local file with the verified content of `name`.

        Raises FileNotFoundError if it is missing and ChecksumMismatch if it differs.
        """
        ...

    def lock(self) -> AbstractContextManager[None]:
        """Exclusive lock around read-check-write sequences."""
        ...

    def check_writable(self) -> None:
        """StoreError unless files can be created under the root; leaves nothing behind."""
        ...

    def append_history(self, line: str) -> None:
        """Durably append one JSON line to the alias history, on a line of its own."""
        ...

    def read_history(self) -> list[str]:
        """All non-blank history lines, oldest first; bytes that are not UTF-8 are replaced."""
        ...


def open_storage(root: str) -> Storage:
    """Local storage for a path; Beam's file systems (imported only now) for a `scheme://` URI."""
    if is_uri(root):
        from model_store.object_storage import ObjectStorage

        return ObjectStorage(root)
    return LocalStorage(Path(root).expanduser())


def fetch_file(uri: str, sha256: str | None) -> Path:
    """The file at `uri` as a local file whose content has `sha256` (unchecked when None).

    How Beam workers get the model a job was pinned to, the way `Storage.fetch` gets a store's
    versions: a local path is checked where it is; a `scheme://` URI is fetched through Beam's
    file systems into the model cache once (shared with `ObjectStorage`), and the cached copy
    is checked on every call. Raises FileNotFoundError if the file is missing and
    ChecksumMismatch if its content differs.
    """
    if is_uri(uri):
        from model_store.object_storage import download, model_cache

        return download(uri, sha256, model_cache())
    return verified_file(Path(uri), sha256)


def fsync_dir(path: Path) -> None:
    """Persist a directory entry change (create, rename) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage:
    """A store in a local (or POSIX network) directory.

    Pointer writes go to a temporary file that is fsynced and then `os.replace`d, which is
    atomic on POSIX; versions are assembled under `.staging/` and renamed into place; an
    `flock` on `.lock` serialises read-check-write sequences across processes.
    """

    def __init__(self, root: Path) -> None:
        self._root = root.absolute()
        self.root = str(self._root)

    def uri(self, name: str) -> str:
        return str(self._root / name)

    def read(self, name: str) -> bytes | None:
        try:
            return (self._root / name).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes) -> None:
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
        for path in staged.iterdir():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(staged)
        target = self._root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staged, target)  # atomic; fails if `target` exists
        fsync_dir(target.parent)

    def fetch(self, name: str, sha256: str) -> Path:
        return verified_file(self._root / name, sha256)

    @contextmanager
    def lock(self) -> Iterator[None]:
        self._root.mkdir(parents=True, exist_ok=True)
        with (self._root / ".lock").open("ab") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes or the process dies
            yield

    def check_writable(self) -> None:
        # Creates the root (and missing parents), as the first registration would; a probe
        # file shows that files can be created there (permissions, read-only mounts).
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            probe = self._root / f".write-check-{uuid.uuid4().hex}"
            probe.touch(exist_ok=False)
            probe.unlink()
        except FileExistsError:
            raise StoreError(f"store root {self.root} is not a directory") from None
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise StoreError(f"store root {self.root} is not writable ({reason})") from None

    def append_history(self, line: str) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        path = self._root / "history.jsonl"
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            # A crash mid-append leaves a last line without its newline: start a new line so
            # this entry is not glued to that fragment (which readers then report, not lose).
            torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            os.write(fd, (("\n" if torn else "") + line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_history(self) -> list[str]:
        data = self.read("history.jsonl")
        text = "" if data is None else data.decode(errors="replace")
        return [line for line in text.split("\n") if line.strip()]
