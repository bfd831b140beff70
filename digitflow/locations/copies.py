"""Verified local copies of objects, kept in a cache folder and named by their content."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from digitflow.locations import local
from digitflow.locations.checksums import ChecksumMismatch, sha256_file, verified_file
from digitflow.locations.registry import backend_for, split

log = logging.getLogger(__name__)


def cached_copy(uri: str, sha256: str | None, cache: Path) -> Path:
    """A local copy of the object `uri` in `cache` whose content has `sha256` (unchecked when
    None).

    Copies are named by their content (`<sha256>-<name>`), so they never change: one that is
    already cached and still matches is reused, anything else is fetched again in one atomic
    replace. Raises FileNotFoundError if `uri` is missing and ChecksumMismatch if its content
    differs.
    """
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    if sha256 is not None:
        with contextlib.suppress(FileNotFoundError, ChecksumMismatch):
            return verified_file(cache / f"{sha256}-{name}", sha256)
    log.debug("downloading %s", uri)  # not INFO: the CLI prints digitflow's INFO lines
    cache.mkdir(parents=True, exist_ok=True)
    with local.temporary(cache / name) as tmp:
        with tmp.open("wb") as fh:
            backend_for(uri).download(*split(uri), fh)
        digest = sha256_file(tmp)
        if sha256 is not None and digest != sha256:
            raise ChecksumMismatch(uri)
        cached = cache / f"{digest}-{name}"
        local.commit(tmp, cached)
    return cached
