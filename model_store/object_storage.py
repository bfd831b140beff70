"""Stores under an object URI (`s3://bucket/prefix`, `gs://bucket/prefix`, any scheme
`digitflow.locations` has a backend for).

Object stores cannot rename, but they write whole objects conditionally: S3 `If-Match` (the
ETag read) and `If-None-Match: *` (absent), GCS `ifGenerationMatch`. Every change here is such
a write, so concurrent writers cannot overwrite each other. See `model_store/README.md`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory

from digitflow import config, locations
from model_store.errors import StoreError, WriteConflict

_HISTORY_READERS = 16  # history entries fetched at once: one request each


def model_cache() -> Path:
    """Where fetched model files are kept: `$DIGITFLOW_HOME/cache/models`."""
    return config.home() / "cache" / "models"


def check_uri(uri: str, what: str) -> str:
    """`uri` if it is an object URI with a bucket, else StoreError naming `what` it is."""
    if not locations.is_object_uri(uri):
        raise StoreError(f"unsupported {what} URI {uri}: use {locations.described()}")
    return uri


class ObjectStorage:
    """A store under an object URI prefix; model files are fetched into a local cache.

    Tokens are the objects' versions (S3 ETags, GCS generations). A version's number is claimed
    by writing its model object only if absent; history entries are objects of their own,
    named by the time taken just before the alias write they record, so their order is that of
    the writes.
    """

    def __init__(self, root: str, cache_dir: Path | None = None) -> None:
        self.root = check_uri(root, "store").rstrip("/")
        self._cache = cache_dir or model_cache()

    def uri(self, name: str) -> str:
        return f"{self.root}/{name}"

    def read_versioned(self, name: str) -> tuple[bytes | None, str | None]:
        blob = locations.get(self.uri(name))
        return (None, None) if blob is None else (blob.data, blob.version)

    def write_if(self, name: str, data: bytes, token: str | None, *, history: str | None) -> None:
        # A later writer read this write's result, after this stamp: stamps follow the writes.
        stamp = time.time_ns()
        self._put(name, data, token)
        if history is not None:
            entry = f"history/{stamp:020d}-{uuid.uuid4().hex[:8]}.json"
            self._put(entry, (history + "\n").encode(), None)

    def children(self, name: str) -> list[str]:
        prefix = self.uri(name) + "/"
        found = locations.list_prefix(prefix)
        return sorted({listed.uri[len(prefix) :].split("/")[0] for listed in found})

    @contextmanager
    def staging(self) -> Iterator[Path]:
        with TemporaryDirectory(prefix="digitflow-stage-") as tmp:
            yield Path(tmp)

    def publish(self, staged: Path, name: str, *, marker: str) -> None:
        # No rename: the first object written only if absent claims `name`; readers ignore a
        # version until its marker exists, so a crash mid-upload leaves nothing visible. Bytes,
        # not a stream: fake-gcs-server ignores ifGenerationMatch on resumable uploads.
        for path in sorted(staged.iterdir(), key=lambda path: path.name == marker):
            self._put(f"{name}/{path.name}", path.read_bytes(), None)

    def fetch(self, name: str, sha256: str) -> Path:
        return locations.fetch(self.uri(name), sha256, self._cache)

    def check_writable(self) -> None:
        # Object stores have no directories: write a probe object and delete it again.
        probe = self.uri(f".write-check-{uuid.uuid4().hex}")
        try:
            locations.put(probe, b"", if_version=locations.ABSENT)
            locations.delete(probe)
        except locations.ObjectStoreError as error:
            reason = str(error).removeprefix(f"{probe}: ")
            raise StoreError(f"store root {self.root} is not writable ({reason})") from None

    def read_history(self) -> list[str]:
        found = locations.list_prefix(self.uri("history/"))
        uris = [listed.uri for listed in found if listed.uri.endswith(".json")]
        with ThreadPoolExecutor(_HISTORY_READERS) as pool:
            blobs = list(pool.map(locations.get, uris))
        return [blob.data.decode(errors="replace").strip() for blob in blobs if blob is not None]

    def _put(self, name: str, data: bytes, token: str | None) -> None:
        """Write `name` if it is still as read with `token` (None: if absent)."""
        condition = locations.ABSENT if token is None else token
        try:
            locations.put(self.uri(name), data, if_version=condition)
        except locations.PreconditionFailed:
            raise WriteConflict(self.uri(name)) from None
