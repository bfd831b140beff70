"""`digitflow.locations`, the one I/O layer, on each kind of location: a local folder, `mem://`
(tests/memory_backend.py, registered for the test) and real S3 and GCS buckets."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import memory_backend
import pytest
from servers import IN_PROCESS_STORE_KINDS, ObjectServer, create_bucket

from digitflow import locations
from digitflow.listing import UnreadableError
from model_store import StoreError
from model_store.storage import open_storage


@pytest.fixture(params=IN_PROCESS_STORE_KINDS)
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty folder, or a new bucket on each object store."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    if request.param == "local":
        yield str(tmp_path / "root")
    elif request.param == "mem":
        with memory_backend.registered():
            yield f"{memory_backend.SCHEME}://{name}"
    else:
        servers: dict[str, ObjectServer] = request.getfixturevalue("object_servers")
        yield create_bucket(servers[request.param], name)


def test_write_get_read_and_stream(root: str) -> None:
    location = f"{root}/a/b.bin"
    locations.write(location, b"first")
    locations.write(location, b"second")

    found = locations.get(location)
    assert found is not None and found.data == b"second"
    assert locations.read(location) == b"second"
    with locations.reader(location) as stream:
        assert stream.read() == b"second"
    assert locations.get(f"{root}/a/missing.bin") is None
    with pytest.raises(FileNotFoundError):
        locations.reader(f"{root}/a/missing.bin")


def test_reads_are_bounded_and_fail_in_one_line(root: str) -> None:
    location = f"{root}/huge.png"
    locations.write(location, bytes(2 << 20))

    with pytest.raises(UnreadableError, match=r"^too large: 2\.0 MiB \(limit 1 MiB\)$"):
        locations.read(location, max_mib=1)
    assert locations.read(location, max_mib=2) == bytes(2 << 20)
    with pytest.raises(UnreadableError, match=r"^unreadable: no such (file or directory|object)$"):
        locations.read(f"{root}/missing.png")


def test_fetch_gives_a_verified_local_file(root: str, tmp_path: Path) -> None:
    location, cache = f"{root}/models/model.keras", tmp_path / "cache"
    locations.write(location, b"a model")
    sha256 = hashlib.sha256(b"a model").hexdigest()

    fetched = locations.fetch(location, sha256, cache)
    assert fetched.read_bytes() == b"a model"
    assert fetched == (Path(location) if "://" not in root else cache / f"{sha256}-model.keras")
    with pytest.raises(locations.ChecksumMismatch):
        locations.fetch(location, "0" * 64, cache)
    with pytest.raises(FileNotFoundError):
        locations.fetch(f"{root}/models/gone.keras", sha256, cache)


def test_a_stores_token_is_the_version_of_its_file(root: str) -> None:
    storage = open_storage(f"{root}/store")
    storage.write_if("aliases.json", b"{}", None, history=None)
    found = locations.get(f"{root}/store/aliases.json")
    assert found is not None
    assert storage.read_versioned("aliases.json") == (found.data, found.version)


@pytest.fixture
def bucket_root() -> Iterator[str]:
    with memory_backend.registered():
        yield f"{memory_backend.SCHEME}://test-{uuid.uuid4().hex[:12]}"


def test_conditional_writes_and_listings_of_objects(bucket_root: str) -> None:
    uri = f"{bucket_root}/refs/aliases.json"
    first = locations.put(uri, b"v1", if_version=locations.ABSENT)
    with pytest.raises(locations.PreconditionFailed):
        locations.put(uri, b"lost", if_version=locations.ABSENT)
    second = locations.put(uri, b"v2", if_version=first)
    with pytest.raises(locations.PreconditionFailed):
        locations.put(uri, b"lost", if_version=first)
    assert locations.get(uri) == locations.Blob(b"v2", second)

    locations.put(f"{bucket_root}/refs/other.json", b"123")
    assert locations.list_prefix(f"{bucket_root}/refs/") == [
        locations.Listed(uri, 2),
        locations.Listed(f"{bucket_root}/refs/other.json", 3),
    ]
    locations.delete(uri)
    locations.delete(uri)  # gone already: nothing to do
    assert [listed.uri for listed in locations.list_prefix(bucket_root)] == [
        f"{bucket_root}/refs/other.json"
    ]


def test_a_registered_scheme_is_a_supported_location(bucket_root: str) -> None:
    assert locations.is_object_uri(f"{bucket_root}/key")
    assert locations.described() == "a local path, s3://, gs:// or mem://"
    with pytest.raises(StoreError, match=r"use a local path, s3://, gs:// or mem://$"):
        open_storage("hdfs://cluster/models")


def test_an_unregistered_scheme_is_a_local_path() -> None:
    assert locations.is_uri("mem://bucket/key") and not locations.is_object_uri("mem://bucket/key")
    with pytest.raises(UnreadableError, match=r"^unreadable: no such file or directory$"):
        locations.read("mem://bucket/key")
