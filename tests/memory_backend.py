"""An object store in memory, `mem://bucket/key`: all a new backend of `digitflow.locations` is,
one module here and one `register` line (`registered()`, for the tests that use it). Any bucket
exists; versions count up; objects live as long as the registration, in this process only.
"""

from __future__ import annotations

import errno
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from digitflow import locations
from digitflow.listing import check_file_size
from digitflow.locations import ABSENT, Blob, Precondition, PreconditionFailed

SCHEME = "mem"


class MemoryBackend:
    """`digitflow.locations.Backend` on a dict, one lock making each write compare-and-swap."""

    def __init__(self) -> None:
        self._objects: dict[tuple[str, str], Blob] = {}
        self._versions = itertools.count(1)
        self._lock = threading.Lock()

    def get(self, bucket: str, key: str, max_mib: int | None, size: int | None) -> Blob | None:
        found = self._objects.get((bucket, key))
        if found is not None and max_mib is not None:
            check_file_size(len(found.data), max_mib)
        return found

    def put(
        self, bucket: str, key: str, data: bytes | BinaryIO, condition: str | Precondition | None
    ) -> str:
        content = data if isinstance(data, bytes) else data.read()
        with self._lock:
            current = self._objects.get((bucket, key))
            held = current.version if current is not None else ABSENT
            if condition is not None and condition != held:
                raise PreconditionFailed(f"{SCHEME}://{bucket}/{key}: 412 precondition failed")
            blob = Blob(content, str(next(self._versions)))
            self._objects[(bucket, key)] = blob
        return blob.version

    def download(self, bucket: str, key: str, target: BinaryIO) -> None:
        found = self._objects.get((bucket, key))
        if found is None:
            raise FileNotFoundError(errno.ENOENT, "no such object", f"{SCHEME}://{bucket}/{key}")
        target.write(found.data)

    def list(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        with self._lock:
            found = list(self._objects.items())
        return [
            (key, len(blob.data))
            for (b, key), blob in found
            if b == bucket and key.startswith(prefix)
        ]

    def delete(self, bucket: str, key: str) -> None:
        with self._lock:
            self._objects.pop((bucket, key), None)


@contextmanager
def registered() -> Iterator[MemoryBackend]:
    """`mem://` served by a new, empty MemoryBackend for the block."""
    backend = MemoryBackend()
    locations.register(SCHEME, lambda: backend)
    try:
        yield backend
    finally:
        locations.unregister(SCHEME)
