"""Objects on Google Cloud Storage (`gs://bucket/key`), through google-cloud-storage.

Credentials and endpoint come the standard way: Google's default credentials, or
`STORAGE_EMULATOR_HOST` (an emulator); the client is imported when the backend is first built.
A conditional write is a real compare-and-swap on the server (`ifGenerationMatch`). A read
bounded by a size takes the object's size first, then that very generation's content: two
requests, or one when a listing already gave the size.
"""

from __future__ import annotations

import errno
import re
from typing import Any, BinaryIO

from digitflow.listing import check_file_size
from digitflow.locations.base import (
    ABSENT,
    Blob,
    ObjectStoreError,
    Precondition,
    PreconditionFailed,
)

_MIB = 1 << 20
_MESSAGE = re.compile(r'"message":\s*"([^"]+)"')
_REQUEST = re.compile(r"^(?:\d+ )?[A-Z]+ \S+: ")  # "404 GET https://...: " before a message


class GCS:
    def __init__(self) -> None:
        from google.api_core import exceptions
        from google.auth.exceptions import GoogleAuthError
        from google.cloud import storage

        try:
            self._client = storage.Client()
        except GoogleAuthError as error:  # e.g. no default credentials on this machine
            raise ObjectStoreError(f"gs://: {' '.join(str(error).split())}") from None
        self._exceptions = exceptions

    def get(self, bucket: str, key: str, max_mib: int | None, size: int | None) -> Blob | None:
        blob = self._client.bucket(bucket).blob(key)
        try:
            data = blob.download_as_bytes() if max_mib is None else _bounded(blob, max_mib, size)
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
            uri = f"gs://{bucket}/{key}"
            raise FileNotFoundError(errno.ENOENT, "no such object", uri) from None
        except self._exceptions.GoogleAPIError as error:
            raise self._failure(error, bucket, key) from None

    def list(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        try:
            return [
                (blob.name, blob.size) for blob in self._client.list_blobs(bucket, prefix=prefix)
            ]
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
        found = _MESSAGE.search(text)
        message = found.group(1) if found else _REQUEST.sub("", text)[:200]
        return kind(f"gs://{bucket}/{key}: {getattr(error, 'code', '')} {message}".strip())


def _bounded(blob: Any, max_mib: int, size: int | None) -> bytes:
    """The content of `blob` if it is at most `max_mib` MiB, refused by its size unread."""
    limit = max_mib * _MIB
    if size is not None:  # the listing's size: no request for it
        check_file_size(size, max_mib)
        data = blob.download_as_bytes(end=limit)  # bytes 0..limit: one more shows it grew
        if len(data) <= limit:
            return data
    blob.reload()  # its size first, then that very generation's content
    check_file_size(blob.size, max_mib)
    return blob.download_as_bytes(if_generation_match=blob.generation)
