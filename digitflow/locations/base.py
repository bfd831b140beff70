"""What every object-store backend speaks: the protocol, its results and its errors."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import BinaryIO, Protocol


class Precondition(enum.Enum):
    ABSENT = "absent"


ABSENT = Precondition.ABSENT
"""`put(..., if_version=ABSENT)`: write only if no object has that name yet."""


class ObjectStoreError(OSError):
    """A request failed: no such bucket, no access, server unreachable... `str()` says which."""


class PreconditionFailed(ObjectStoreError):
    """A conditional write lost: the object changed (or appeared) since it was read."""


@dataclass(frozen=True)
class Blob:
    """An object's content and the version a conditional write can expect."""

    data: bytes
    version: str


@dataclass(frozen=True, order=True)
class Listed:
    """An object found by a listing: its URI and its size in bytes."""

    uri: str
    size: int


class Backend(Protocol):
    """The objects of one URI scheme, `scheme://bucket/key`: one instance per process, shared by
    its threads. Failed requests raise ObjectStoreError, in one line naming the object."""

    def get(self, bucket: str, key: str, max_mib: int | None, size: int | None) -> Blob | None:
        """The object and its version, None if there is none. With `max_mib`, one larger than
        that is refused by its size, unread (UnreadableError, `too large: ...`); `size` is its
        size as a listing gave it, if known."""
        ...

    def put(
        self, bucket: str, key: str, data: bytes | BinaryIO, condition: str | Precondition | None
    ) -> str:
        """Write the whole object in one request; its new version. `condition`: ABSENT or the
        version `get` gave (PreconditionFailed, nothing written, when it no longer holds)."""
        ...

    def download(self, bucket: str, key: str, target: BinaryIO) -> None:
        """Stream the object into `target`; FileNotFoundError (`no such object`) if none."""
        ...

    def list(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        """(key, size) of every object whose key starts with `prefix`."""
        ...

    def delete(self, bucket: str, key: str) -> None:
        """Delete the object if it exists."""
        ...
