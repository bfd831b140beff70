"""sha256 of local files and streams, and files checked against the sha256 recorded for them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 20


class ChecksumMismatch(Exception):
    """A file's content does not match the sha256 recorded for it."""


def copy_stream(source: BinaryIO, target: BinaryIO) -> str:
    """Copy all bytes of `source` to `target`; return their sha256."""
    digest = hashlib.sha256()
    while chunk := source.read(_CHUNK):
        digest.update(chunk)
        target.write(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 of a local file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verified_file(path: Path, sha256: str | None) -> Path:
    """`path`, once checked to be a file whose content has `sha256` (any content when None).

    Raises FileNotFoundError if it is missing and ChecksumMismatch if it differs.
    """
    if not path.is_file():
        raise FileNotFoundError(str(path))
    if sha256 is not None and sha256_file(path) != sha256:
        raise ChecksumMismatch(str(path))
    return path
