"""Objects on S3 (`s3://bucket/key`) or an S3-compatible server, through boto3.

Credentials and endpoint come the standard way: the AWS credential chain and `AWS_ENDPOINT_URL`
(an S3-compatible server); boto3 is imported when the backend is first built. Each read is one
request (the GET's headers give the size before the body is read); a conditional write is a
real compare-and-swap on the server: `If-Match` (the ETag read) or `If-None-Match: *` (absent).
"""

from __future__ import annotations

import contextlib
import errno
from typing import Any, BinaryIO

from digitflow.listing import check_file_size
from digitflow.locations.base import (
    ABSENT,
    Blob,
    ObjectStoreError,
    Precondition,
    PreconditionFailed,
)


class S3:
    def __init__(self) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        config = Config(retries={"mode": "standard"}, max_pool_connections=32)
        self._client = boto3.client("s3", config=config)
        # BotoCoreError: failures before an answer (no credentials, server unreachable)
        self._error = (ClientError, BotoCoreError)

    def get(self, bucket: str, key: str, max_mib: int | None, size: int | None) -> Blob | None:
        try:
            response = self._client.get_object(Bucket=bucket, Key=key)
            with contextlib.closing(response["Body"]) as body:  # closed unread if too large
                if max_mib is not None:
                    check_file_size(response["ContentLength"], max_mib)
                return Blob(body.read(), response["ETag"])
        except self._error as error:
            if _code(error) in ("NoSuchKey", "404"):
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
            if _code(error) in ("NoSuchKey", "404"):
                uri = f"s3://{bucket}/{key}"
                raise FileNotFoundError(errno.ENOENT, "no such object", uri) from None
            raise self._failure(error, bucket, key) from None

    def list(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        try:
            return [
                (item["Key"], item["Size"]) for page in pages for item in page.get("Contents", [])
            ]
        except self._error as error:
            raise self._failure(error, bucket, prefix) from None

    def delete(self, bucket: str, key: str) -> None:
        try:
            self._client.delete_object(Bucket=bucket, Key=key)
        except self._error as error:
            raise self._failure(error, bucket, key) from None

    @staticmethod
    def _failure(error: Any, bucket: str, key: str) -> ObjectStoreError:
        code = _code(error)
        # 409 ConditionalRequestConflict: another conditional write to the key is in flight.
        lost = code in ("PreconditionFailed", "412", "ConditionalRequestConflict")
        kind = PreconditionFailed if lost else ObjectStoreError
        response = getattr(error, "response", {})  # a BotoCoreError has none
        message = response.get("Error", {}).get("Message") or code or str(error)
        return kind(": ".join(part for part in (f"s3://{bucket}/{key}", code, message) if part))


def _code(error: Any) -> str:
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))
