"""The storage layer under the store: local directories here, object URIs (s3://, gs://) in
object_storage; their bytes move through `digitflow.locations`.

Names passed to a `Storage` are relative, `/`-separated and built by the store itself from
validated parts (version numbers, fixed file names), never from user input. Nothing is ever
locked for long: every change is a conditional write that raises WriteConflict, changing
nothing, when its target changed since it was read.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from digitflow import locations
from model_store.errors import StoreError, WriteConflict
from model_store.object_storage import ObjectStorage, check_uri, model_cache

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
    """Local storage for a path, object storage for a URI (s3://, gs://...)."""
    if locations.is_uri(root):
        return ObjectStorage(root)
    return LocalStorage(Path(root).expanduser())


def fetch_file(uri: str, sha256: str | None) -> Path:
    """The file at `uri` as a local file whose content has `sha256` (unchecked when None).

    How Beam workers get the model a job was pinned to, the way `Storage.fetch` gets a store's
    versions: a local path is checked where it is; an object URI (s3://, gs://) is downloaded
    into the model cache once (shared with `ObjectStorage`), and the cached copy is checked on
    every call. Raises FileNotFoundError if the file is missing and ChecksumMismatch if its
    content differs.
    """
    if locations.is_uri(uri):
        check_uri(uri, "model")
    return locations.fetch(uri, sha256, model_cache())


class LocalStorage:
    """A store in a local directory.

    A conditional write takes an exclusive `flock` on `.lock`, compares the file's version
    (the sha256 of its content) with the token and replaces the file atomically
    (`locations.write`: a temporary file, fsynced, renamed over the old one). A version's
    number is claimed with `mkdir` (which fails if another writer made it first); its files are
    then committed (fsynced and renamed) in from `.staging/`, the marker last.
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
        blob = locations.get(self._root / name)
        return (None, None) if blob is None else (blob.data, blob.version)

    def write_if(self, name: str, data: bytes, token: str | None, *, history: str | None) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        with locations.locked(self._root / ".lock"):
            if self.read_versioned(name)[1] != token:
                raise WriteConflict(self.uri(name))
            locations.write(self._root / name, data)
            if history is not None:
                locations.append_line(self._root / HISTORY_FILE, history)

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
        locations.fsync_dir(target.parent)
        for path in sorted(staged.iterdir(), key=lambda path: path.name == marker):
            locations.commit(path, target / path.name)

    def fetch(self, name: str, sha256: str) -> Path:
        return locations.verified_file(self._root / name, sha256)

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
        data = self.read_versioned(HISTORY_FILE)[0]
        text = "" if data is None else data.decode(errors="replace")
        return [line for line in text.split("\n") if line.strip()]

    def _not_a_directory(self) -> StoreError:
        return StoreError(f"store root {self.root} is not a directory")
