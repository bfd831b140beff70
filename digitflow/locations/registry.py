"""Which backend serves which URI scheme, as MLflow's `StoreRegistry`: `register(scheme,
builder)`, then `backend_for(uri)`.

Each backend is built on first use and then shared by every thread of the process: building a
boto3 client costs ~160 ms of CPU, which Beam's S3 file system pays on every operation. A new
backend is a module with a class that follows `base.Backend`, and one `register` line below.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from digitflow.locations.base import Backend
from digitflow.locations.gcs import GCS
from digitflow.locations.s3 import S3

_URI = re.compile(r"[a-zA-Z][-a-zA-Z0-9+.]*://")
_builders: dict[str, Callable[[], Backend]] = {}
_built: dict[str, Backend] = {}
_lock = threading.Lock()


def register(scheme: str, builder: Callable[[], Backend]) -> None:
    """Serve `scheme://bucket/key` URIs with the backend `builder()` makes on first use."""
    with _lock:
        _builders[scheme] = builder
        _built.pop(scheme, None)


def unregister(scheme: str) -> None:
    """Serve `scheme://` no more (a test's backend, once the test is done)."""
    with _lock:
        del _builders[scheme]
        _built.pop(scheme, None)


def is_uri(location: str) -> bool:
    """True for `scheme://...` locations (any scheme, served or not), False for local paths."""
    return _URI.match(location) is not None


def is_object_uri(location: str) -> bool:
    """True for `scheme://bucket[/key]` with a scheme a backend serves and a bucket."""
    scheme, separator, rest = location.partition("://")
    return bool(separator) and scheme in _builders and bool(rest.partition("/")[0])


def described() -> str:
    """What a location may be, for messages: `a local path, s3:// or gs://`."""
    schemes = [f"{scheme}://" for scheme in _builders]
    return " or ".join([", ".join(["a local path", *schemes[:-1]]), *schemes[-1:]])


def split(uri: str) -> tuple[str, str]:
    """(bucket, key) of `scheme://bucket/key`; ValueError unless a backend serves it."""
    if not is_object_uri(uri):
        raise ValueError(f"not an object URI ({described()}): {uri}")
    bucket, _, key = uri.partition("://")[2].partition("/")
    return bucket, key


def backend_for(uri: str) -> Backend:
    """The process's one backend for the scheme of `uri`; ValueError if none serves it."""
    scheme = uri.partition("://")[0]
    with _lock:
        if scheme not in _builders:
            raise ValueError(f"unsupported object store scheme {scheme}://")
        if scheme not in _built:
            _built[scheme] = _builders[scheme]()
        return _built[scheme]


register("s3", S3)
register("gs", GCS)
