"""Stores on S3 (`s3://bucket/prefix`) and GCS (`gs://bucket/prefix`), through digitflow.objects.

Object stores cannot rename, but they write whole objects conditionally: S3 `If-Match` (the
ETag read) and `If-None-Match: *` (absent), GCS `ifGenerationMatch`. Every change here is such
a write, so concurrent writers cannot overwrite each other. See `model_store/README.md`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory

from digitflow import config, objects
from model_store.errors import StoreError
from model_store.files import ChecksumMismatch, WriteConflict, sha256_file, verified_file

log = logging.getLogger(__name__)

_HISTORY_READERS = 16  # history entries fetched at once: one request each


def model_cache() -> Path:
    """Where fetched model files are kept: `$DIGITFLOW_HOME/cache/models`."""
    return config.home() / "cache" / "models"


def check_uri(uri: str, what: str) -> str:
    """`uri` if it is an s3:// or gs:// URI with a bucket, else StoreError naming `what` it is."""
    if not objects.is_object_uri(uri):
        raise StoreError(f"unsupported {what} URI {uri}: use a local path, s3:// or gs://")
    return uri


def download(uri: str, sha256: str | None, cache: Path) -> Path:
    """A local copy of `uri` in `cache` whose content has `sha256` (unchecked when None).

    Copies are named by their content (`<sha256>-<name>`), so they never change: one that is
    already cached and still matches is reused, anything else is fetched again in one
    atomic replace. Raises FileNotFoundError if `uri` is missing and ChecksumMismatch if its
    content differs.
    """
    name = check_uri(uri, "model").rstrip("/").rsplit("/", 1)[-1]
    if sha256 is not None:
        with contextlib.suppress(FileNotFoundError, ChecksumMismatch):
            return verified_file(cache / f"{sha256}-{name}", sha256)
    log.info("downloading %s", uri)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        with tmp.open("wb") as fh:
            objects.download(uri, fh)
        digest = sha256_file(tmp)
        if sha256 is not None and digest != sha256:
            raise ChecksumMismatch(uri)
        cached = cache / f"{digest}-{name}"
        os.replace(tmp, cached)
    finally:
        tmp.unlink(missing_ok=True)
    return cached


class ObjectStorage:
    """A store under an s3:// or gs:// prefix; model files are fetched into a local cache.

    Tokens are S3 ETags and GCS generations. A version's number is claimed by writing its
    model object only if absent; history entries are objects of their own, named by the time
    taken just before the alias write they record, so their order is that of the writes.
    """

    def __init__(self, root: str, cache_dir: Path | None = None) -> None:
        self.root = check_uri(root, "store").rstrip("/")
        self._cache = cache_dir or model_cache()

    def uri(self, name: str) -> str:
        return f"{self.root}/{name}"

    def read_versioned(self, name: str) -> tuple[bytes | None, str | None]:
        blob = objects.get(self.uri(name))
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
        return sorted({uri[len(prefix) :].split("/")[0] for uri in objects.names(prefix)})

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
        return download(self.uri(name), sha256, self._cache)

    def check_writable(self) -> None:
        # Object stores have no directories: write a probe object and delete it again.
        probe = self.uri(f".write-check-{uuid.uuid4().hex}")
        try:
            objects.put(probe, b"", if_version=objects.ABSENT)
            objects.delete(probe)
        except objects.ObjectStoreError as error:
            reason = str(error).removeprefix(f"{probe}: ")
            raise StoreError(f"store root {self.root} is not writable ({reason})") from None

    def read_history(self) -> list[str]:
        uris = [uri for uri in objects.names(self.uri("history/")) if uri.endswith(".json")]
        with ThreadPoolExecutor(_HISTORY_READERS) as pool:
            blobs = list(pool.map(objects.get, uris))
        return [blob.data.decode(errors="replace").strip() for blob in blobs if blob is not None]

    def _put(self, name: str, data: bytes, token: str | None) -> None:
        """Write `name` if it is still as read with `token` (None: if absent)."""
        condition = objects.ABSENT if token is None else token
        try:
            objects.put(self.uri(name), data, if_version=condition)
        except objects.PreconditionFailed:
            raise WriteConflict(self.uri(name)) from None
