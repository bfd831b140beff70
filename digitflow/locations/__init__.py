"""One I/O layer for locations: local paths and objects (`s3://bucket/key`, `gs://bucket/key`,
any scheme a backend is registered for in `registry`).

Everything in digitflow, model_store, beam_jobs and flows that reads or writes a user's or the
store's bytes goes through here (tests/test_layering.py checks the writes and the cloud clients).

- reads: `read` (at most `max_mib`, refused by size before a byte is read; one-line
  UnreadableError), `reader` (a stream), `get` (the whole content with the version a
  conditional write expects), `list_prefix` (URIs with sizes), `fetch` (a verified local file);
- writes: `write` (atomic: a local temporary file fsynced and renamed, one put on an object
  store), `put` (an object, optionally compare-and-swap on the server), `delete`; and for local
  files `temporary` + `commit` (for libraries that write files themselves), `copy_file`,
  `append_line` and `locked`.

A URI whose scheme no backend serves (`hdfs://...`) is taken as a local path: reading it fails
with `no such file or directory`. Callers that must refuse it say so (`described()` lists what
is served). A new backend: see `registry`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from digitflow.listing import MAX_FILE_MIB, UnreadableError, read_file
from digitflow.locations import local
from digitflow.locations.base import (
    ABSENT,
    Backend,
    Blob,
    Listed,
    ObjectStoreError,
    Precondition,
    PreconditionFailed,
)
from digitflow.locations.checksums import ChecksumMismatch, sha256_file, verified_file
from digitflow.locations.copies import cached_copy
from digitflow.locations.local import append_line, commit, copy_file, fsync_dir, locked, temporary
from digitflow.locations.registry import (
    backend_for,
    described,
    is_object_uri,
    is_uri,
    register,
    split,
    unregister,
)

__all__ = [
    "ABSENT",
    "Backend",
    "Blob",
    "ChecksumMismatch",
    "Listed",
    "ObjectStoreError",
    "Precondition",
    "PreconditionFailed",
    "append_line",
    "backend_for",
    "commit",
    "copy_file",
    "delete",
    "described",
    "fetch",
    "fsync_dir",
    "get",
    "is_object_uri",
    "is_uri",
    "list_prefix",
    "locked",
    "put",
    "read",
    "reader",
    "register",
    "sha256_file",
    "temporary",
    "unregister",
    "verified_file",
    "write",
]

Location = str | os.PathLike[str]


def read(
    location: str | bytes | os.PathLike[str],
    max_mib: int = MAX_FILE_MIB,
    *,
    size: int | None = None,
) -> bytes:
    """The bytes of a local file (as `digitflow.listing.read_file` reads it: a regular file,
    never blocking) or of an object, of at most `max_mib` MiB; UnreadableError, in one line,
    when it is missing, larger or cannot be read. `size`, the object's size as a listing gave
    it, spares a request where the backend needs one to learn it (gs://)."""
    name = os.fsdecode(location)
    if not is_object_uri(name):
        return read_file(location, max_mib)
    try:
        found = backend_for(name).get(*split(name), max_mib, size)
    except ObjectStoreError as error:
        raise UnreadableError(f"unreadable: {error}") from None
    if found is None:
        raise UnreadableError("unreadable: no such object")
    return found.data


def reader(location: Location) -> BinaryIO:
    """A binary stream of the bytes at `location`, for the caller to close; FileNotFoundError
    if there are none. An object is first downloaded to an anonymous temporary file."""
    name = os.fspath(location)
    if not is_object_uri(name):
        return open(name, "rb")
    spool = tempfile.TemporaryFile()  # noqa: SIM115 (returned open)
    try:
        backend_for(name).download(*split(name), spool)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def get(location: Location) -> Blob | None:
    """The whole content of `location` and its version, None if there is none. An object's
    version is its ETag or generation, the one `put(..., if_version=)` expects; a local
    file's is the sha256 of its content."""
    name = os.fspath(location)
    if not is_object_uri(name):
        return local.get(Path(name))
    return backend_for(name).get(*split(name), None, None)


def put(uri: str, data: bytes | BinaryIO, *, if_version: str | Precondition | None = None) -> str:
    """Write the whole object in one request; return its new version.

    `if_version` makes the write conditional: ABSENT (no object yet) or the version `get` gave.
    Raises PreconditionFailed when that no longer holds; nothing is written then.
    """
    return backend_for(uri).put(*split(uri), data, if_version)


def write(location: Location, data: bytes) -> None:
    """Replace (or create) `location` with `data`, atomically: readers see all of the old bytes
    or all of the new."""
    name = os.fspath(location)
    if is_object_uri(name):
        put(name, data)
    else:
        local.write(Path(name), data)


def delete(uri: str) -> None:
    """Delete the object if it exists."""
    backend_for(uri).delete(*split(uri))


def list_prefix(prefix_uri: str) -> list[Listed]:
    """Every object whose URI starts with `prefix_uri`, with its size, sorted by URI."""
    scheme = prefix_uri.partition("://")[0]
    bucket, prefix = split(prefix_uri)
    found = backend_for(prefix_uri).list(bucket, prefix)
    return sorted(Listed(f"{scheme}://{bucket}/{key}", size) for key, size in found)


def fetch(location: Location, sha256: str | None, cache: Path) -> Path:
    """A local file with the content of `location`, checked to have `sha256` (any content when
    None): a local file where it is, an object as a copy kept in `cache` (fetched once, checked
    on every call). Raises FileNotFoundError if it is missing and ChecksumMismatch if it
    differs."""
    name = os.fspath(location)
    if not is_object_uri(name):
        return verified_file(Path(name), sha256)
    return cached_copy(name, sha256, cache)
