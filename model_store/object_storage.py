"""Stores on object stores (gs://, s3://, ...) through Beam's `FileSystems` layer.

Object stores cannot rename atomically and have no cross-client locks. Safety comes from
whole-object writes instead: an object becomes visible only once its upload completes, and
an overwrite replaces it in one step. See `model_store/README.md` for what that guarantees.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from digitflow import config
from model_store.errors import StoreError
from model_store.files import ChecksumMismatch, copy_stream, verified_file

log = logging.getLogger(__name__)

_RAW = CompressionTypes.UNCOMPRESSED


def model_cache() -> Path:
    """Where fetched model files are kept: `$DIGITFLOW_HOME/cache/models`."""
    return config.home() / "cache" / "models"


def download(uri: str, sha256: str | None, cache: Path) -> Path:
    """A local copy of `uri` in `cache` whose content has `sha256` (unchecked when None).

    Copies are named by their content (`<sha256>-<name>`), so they never change: one that is
    already cached and still matches is reused, anything else is fetched again in one
    atomic replace. Raises FileNotFoundError if `uri` is missing and ChecksumMismatch if its
    content differs.
    """
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    if sha256 is not None:
        with contextlib.suppress(FileNotFoundError, ChecksumMismatch):
            return verified_file(cache / f"{sha256}-{name}", sha256)
    if not FileSystems.exists(uri):
        raise FileNotFoundError(uri)
    log.info("downloading %s", uri)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        with FileSystems.open(uri, compression_type=_RAW) as src, tmp.open("wb") as dst:
            digest = copy_stream(src, dst)
        if sha256 is not None and digest != sha256:
            raise ChecksumMismatch(uri)
        cached = cache / f"{digest}-{name}"
        os.replace(tmp, cached)
    finally:
        tmp.unlink(missing_ok=True)
    return cached


class ObjectStorage:
    """A store under any URI Beam can read and write; model files are fetched into a cache."""

    def __init__(self, root: str, cache_dir: Path | None = None) -> None:
        self.root = root.rstrip("/")
        try:
            FileSystems.get_filesystem(self.root)
        except ValueError as error:  # unknown scheme, or its Beam extra is not installed
            raise StoreError(f"cannot open store {self.root}: {error}") from None
        self._cache = cache_dir or model_cache()

    def uri(self, name: str) -> str:
        return FileSystems.join(self.root, *name.split("/"))

    def read(self, name: str) -> bytes | None:
        uri = self.uri(name)
        if not FileSystems.exists(uri):
            return None
        with FileSystems.open(uri, compression_type=_RAW) as fh:
            return fh.read()

    def write(self, name: str, data: bytes) -> None:
        # One object, written in one upload: readers see the old or the new object, never a mix.
        with FileSystems.create(self.uri(name), compression_type=_RAW) as fh:
            fh.write(data)

    def children(self, name: str) -> list[str]:
        prefix = self.uri(name) + "/"
        matches = FileSystems.match([FileSystems.join(self.uri(name), "*", "*")])[0]
        return sorted({m.path[len(prefix) :].split("/")[0] for m in matches.metadata_list})

    @contextmanager
    def staging(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="digitflow-stage-") as tmp:
            yield Path(tmp)

    def publish(self, staged: Path, name: str, *, marker: str) -> None:
        # No atomic rename: upload everything else first, the marker last. Readers ignore a
        # version until its marker exists, so a crash mid-upload leaves nothing visible.
        files = sorted(staged.iterdir(), key=lambda path: path.name == marker)
        for path in files:
            with (
                path.open("rb") as src,
                FileSystems.create(self.uri(f"{name}/{path.name}"), compression_type=_RAW) as dst,
            ):
                copy_stream(src, dst)

    def fetch(self, name: str, sha256: str) -> Path:
        return download(self.uri(name), sha256, self._cache)

    def lock(self) -> AbstractContextManager[None]:
        # Beam's FileSystems offers no conditional write, so no lock can be built on it:
        # concurrent writers to one object store must be serialised outside (see README).
        return contextlib.nullcontext()

    def check_writable(self) -> None:
        # Object stores have no directories: write a probe object and delete it again.
        probe = self.uri(f".write-check-{uuid.uuid4().hex}")
        try:
            with FileSystems.create(probe, compression_type=_RAW) as fh:
                fh.write(b"")
            FileSystems.delete([probe])
        except OSError as error:  # Beam's BeamIOError is an OSError
            reason = " ".join(str(error).split())[:200] or type(error).__name__
            raise StoreError(f"store root {self.root} is not writable ({reason})") from None

    def append_history(self, line: str) -> None:
        # Objects cannot be appended to; one object per entry never loses a concurrent entry.
        name = f"history/{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        self.write(name, (line + "\n").encode())

    def read_history(self) -> list[str]:
        matches = FileSystems.match([self.uri("history/*.json")])[0]
        lines = []
        for path in sorted(m.path for m in matches.metadata_list):
            with FileSystems.open(path, compression_type=_RAW) as fh:
                lines.append(fh.read().decode(errors="replace").strip())
        return lines
