"""Objects on S3 (`s3://bucket/key`) and GCS (`gs://bucket/key`), with conditional writes.

One client per scheme and process, built on first use and reused by every thread: building a
boto3 client costs ~160 ms of CPU, which Beam's S3 file system pays on every operation. Each
read is one request; `put(..., if_version=...)` is a real compare-and-swap on the server (S3
`If-Match` / `If-None-Match: *`, GCS `ifGenerationMatch`).

Endpoints and credentials come the standard way: for S3 the AWS credential chain and
`AWS_ENDPOINT_URL` (an S3-compatible server), for GCS Google's default credentials or
`STORAGE_EMULATOR_HOST` (an emulator). The clients are imported only when first needed.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import os
import re
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from digitflow.listing import MAX_FILE_MIB, UnreadableError, check_file_size, read_file

SCHEMES = ("s3", "gs")
_GCS_MESSAGE = re.compile(r'"message":\s*"([^"]+)"')
_GCS_REQUEST = re.compile(r"^(?:\d+ )?[A-Z]+ \S+: ")  # "404 GET https://...: " before a message


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


def is_object_uri(uri: str) -> bool:
    """True for `s3://bucket[/key]` and `gs://bucket[/key]`: a scheme served here and a bucket."""
    scheme, separator, rest = uri.partition("://")
    return bool(separator) and scheme in SCHEMES and bool(rest.partition("/")[0])


def read_bytes(location: str | bytes, max_mib: int = MAX_FILE_MIB) -> bytes:
    """The bytes of a local file (as `digitflow.listing.read_file` reads it) or of an s3:// or
    gs:// object, of at most `max_mib` MiB; UnreadableError, in one line, when it is missing,
    larger or cannot be read."""
    name = os.fsdecode(location)
    if not is_object_uri(name):
        return read_file(location, max_mib)
    try:
        found = get(name, max_mib=max_mib)
    except ObjectStoreError as error:
        raise UnreadableError(f"unreadable: {error}") from None
    if found is None:
        raise UnreadableError("unreadable: no such object")
    return found.data


def get(uri: str, *, max_mib: int | None = None) -> Blob | None:
    """The object at `uri` and its version, or None if there is none.

    With `max_mib`, an object larger than that many MiB is refused by its size, before its
    content is read: UnreadableError (`too large: ...`).
    """
    return _bucket(uri).get(*_split(uri), max_mib)


def put(uri: str, data: bytes | BinaryIO, *, if_version: str | Precondition | None = None) -> str:
    """Write the whole object in one request; return its new version.

    `if_version` makes the write conditional: ABSENT (no object yet) or the version `get` gave.
    Raises PreconditionFailed when that no longer holds; nothing is written then.
    """
    return _bucket(uri).put(*_split(uri), data, if_version)


def download(uri: str, target: BinaryIO) -> None:
    """Stream the object into `target`; FileNotFoundError if there is none."""
    _bucket(uri).download(*_split(uri), target)


def names(prefix_uri: str) -> list[str]:
    """The URIs of every object whose name starts with `prefix_uri`, sorted."""
    scheme = prefix_uri.partition("://")[0]
    bucket, prefix = _split(prefix_uri)
    keys = _bucket(prefix_uri).keys(bucket, prefix)
    return [f"{scheme}://{bucket}/{key}" for key in sorted(keys)]


def delete(uri: str) -> None:
    """Delete the object if it exists."""
    _bucket(uri).delete(*_split(uri))


class _Backend(Protocol):
    def get(self, bucket: str, key: str, max_mib: int | None) -> Blob | None: ...

    def put(
        self, bucket: str, key: str, data: bytes | BinaryIO, condition: str | Precondition | None
    ) -> str: ...

    def download(self, bucket: str, key: str, target: BinaryIO) -> None: ...

    def keys(self, bucket: str, prefix: str) -> list[str]: ...

    def delete(self, bucket: str, key: str) -> None: ...


def _split(uri: str) -> tuple[str, str]:
    """(bucket, key) of `scheme://bucket/key`."""
    if not is_object_uri(uri):
        raise ValueError(f"not an s3:// or gs:// object URI: {uri}")
    bucket, _, key = uri.partition("://")[2].partition("/")
    return bucket, key


def _bucket(uri: str) -> _Backend:
    return _backend(uri.partition("://")[0])


@functools.cache
def _backend(scheme: str) -> _Backend:
    """The process's one client for `scheme`."""
    if scheme == "s3":
        return _S3()
    if scheme == "gs":
        return _GCS()
    raise ValueError(f"unsupported object store scheme {scheme}://")


class _S3:
    def __init__(self) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        config = Config(retries={"mode": "standard"}, max_pool_connections=32)
        self._client = boto3.client("s3", config=config)
        # BotoCoreError: failures before an answer (no credentials, server unreachable)
        self._error = (ClientError, BotoCoreError)

    def get(self, bucket: str, key: str, max_mib: int | None) -> Blob | None:
        try:
            response = self._client.get_object(Bucket=bucket, Key=key)
            with contextlib.closing(response["Body"]) as body:  # closed unread if too large
                if max_mib is not None:
                    check_file_size(response["ContentLength"], max_mib)
                return Blob(body.read(), response["ETag"])
        except self._error as error:
            if _s3_code(error) in ("NoSuchKey", "404"):
                return None
            raise self._failure(error, bucket, key) from None

    def put(
        self, bucket: str, key: str, data: bytes | BinaryIO, condition: str | Precondition | None
    ) -> str:
        extra: dict[str, Any] = {}
        if condition is ABSENT:
            extra["IfNoneMatch"] = "*"
        elif condition is not None:
            extra["IfMatch"] = condition
        try:
            return self._client.put_object(Bucket=bucket, Key=key, Body=data, **extra)["ETag"]
        except self._error as error:
            raise self._failure(error, bucket, key) from None

    def download(self, bucket: str, key: str, target: BinaryIO) -> None:
        try:
            body = self._client.get_object(Bucket=bucket, Key=key)["Body"]
            for chunk in body.iter_chunks(1 << 20):
                target.write(chunk)
        except self._error as error:
            if _s3_code(error) in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"s3://{bucket}/{key}") from None
            raise self._failure(error, bucket, key) from None

    def keys(self, bucket: str, prefix: str) -> list[str]:
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        try:
            return [item["Key"] for page in pages for item in page.get("Contents", [])]
        except self._error as error:
            raise self._failure(error, bucket, prefix) from None

    def delete(self, bucket: str, key: str) -> None:
        try:
            self._client.delete_object(Bucket=bucket, Key=key)
        except self._error as error:
            raise self._failure(error, bucket, key) from None

    @staticmethod
    def _failure(error: Any, bucket: str, key: str) -> ObjectStoreError:
        code = _s3_code(error)
        # 409 ConditionalRequestConflict: another conditional write to the key is in flight.
        lost = code in ("PreconditionFailed", "412", "ConditionalRequestConflict")
        kind = PreconditionFailed if lost else ObjectStoreError
        response = getattr(error, "response", {})  # a BotoCoreError has none
        message = response.get("Error", {}).get("Message") or code or str(error)
        return kind(": ".join(part for part in (f"s3://{bucket}/{key}", code, message) if part))


def _s3_code(error: Any) -> str:
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


class _GCS:
    def __init__(self) -> None:
        from google.api_core import exceptions
        from google.auth.exceptions import GoogleAuthError
        from google.cloud import storage

        try:
            self._client = storage.Client()
        except GoogleAuthError as error:  # e.g. no default credentials on this machine
            raise ObjectStoreError(f"gs://: {' '.join(str(error).split())}") from None
        self._exceptions = exceptions

    def get(self, bucket: str, key: str, max_mib: int | None) -> Blob | None:
        blob = self._client.bucket(bucket).blob(key)
        try:
            if max_mib is not None:  # its size first, then that very generation's content
                blob.reload()
                check_file_size(blob.size, max_mib)
            data = blob.download_as_bytes(if_generation_match=blob.generation)
        except self._exceptions.NotFound as error:
            if self._missing_bucket(error):
                raise self._failure(error, bucket, key) from None
            return None
        except self._exceptions.GoogleAPIError as error:
            raise self._failure(error, bucket, key) from None
        return Blob(data, str(blob.generation))

    def put(
        self, bucket: str, key: str, data: bytes | BinaryIO, condition: str | Precondition | None
    ) -> str:
        blob = self._client.bucket(bucket).blob(key)
        generation = None if condition is None else 0 if condition is ABSENT else int(condition)
        try:
            if isinstance(data, bytes):
                blob.upload_from_string(data, if_generation_match=generation)
            else:
                blob.upload_from_file(data, if_generation_match=generation)
        except self._exceptions.GoogleAPIError as error:
            raise self._failure(error, bucket, key) from None
        return str(blob.generation)

    def download(self, bucket: str, key: str, target: BinaryIO) -> None:
        try:
            self._client.bucket(bucket).blob(key).download_to_file(target)
        except self._exceptions.NotFound as error:
            if self._missing_bucket(error):
                raise self._failure(error, bucket, key) from None
            raise FileNotFoundError(f"gs://{bucket}/{key}") from None
        except self._exceptions.GoogleAPIError as error:
            raise self._failure(error, bucket, key) from None

    def keys(self, bucket: str, prefix: str) -> list[str]:
        try:
            return [blob.name for blob in self._client.list_blobs(bucket, prefix=prefix)]
        except self._exceptions.GoogleAPIError as error:
            raise self._failure(error, bucket, prefix) from None

    def delete(self, bucket: str, key: str) -> None:
        try:
            self._client.bucket(bucket).blob(key).delete()
        except self._exceptions.NotFound:
            pass
        except self._exceptions.GoogleAPIError as error:
            raise self._failure(error, bucket, key) from None

    def _missing_bucket(self, error: Any) -> bool:
        return "bucket" in str(error).lower() and "not exist" in str(error).lower()

    def _failure(self, error: Any, bucket: str, key: str) -> ObjectStoreError:
        lost = isinstance(error, self._exceptions.PreconditionFailed)
        kind = PreconditionFailed if lost else ObjectStoreError
        # The API's own message, not the request and JSON body api_core puts around it.
        text = " ".join(str(getattr(error, "message", error)).split())
        found = _GCS_MESSAGE.search(text)
        message = found.group(1) if found else _GCS_REQUEST.sub("", text)[:200]
        return kind(f"gs://{bucket}/{key}: {getattr(error, 'code', '')} {message}".strip())
