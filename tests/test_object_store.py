"""Stores in real S3 (SeaweedFS) and GCS (fake-gcs-server) buckets: what only object stores
have (the verified model cache, damage done in the bucket, a missing bucket), the
`digitflow models` commands, and the nightly flow. The API on buckets is tested with the local
store's tests in test_model_store.py, races between processes in test_model_store_processes.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_models_cli import error_lines, json_of, models, models_importing

from digitflow import locations
from digitflow.listing import UnreadableError
from digitflow.locations import ChecksumMismatch
from model_store import CorruptVersion, ModelStore, StoreError
from model_store.object_storage import ObjectStorage
from model_store.storage import fetch_file


def test_damage_in_the_bucket_is_a_corrupt_version(
    bucket: str, model_file: Path, tmp_path: Path
) -> None:
    root = f"{bucket}/models"
    writer = ModelStore(root)
    for accuracy in (0.90, 0.91, 0.92):
        writer.register(model_file, {"metrics": {"accuracy": accuracy}})
    writer.promote(1, reason="first", actor="test")
    writer.promote(2, reason="second", actor="test")
    # An upload that stopped before its metadata (the commit marker) is invisible, and its
    # number is never reused.
    locations.put(f"{root}/versions/4/model.keras", b"half an upload")
    assert [v.version for v in writer.list_versions()] == [1, 2, 3]
    assert writer.register(model_file, {"metrics": {}}).version == 5

    locations.put(f"{root}/versions/3/model.keras", b"damaged in the bucket")
    locations.delete(f"{root}/versions/1/model.keras")
    # Another machine: nothing cached yet.
    reader = ModelStore(storage=ObjectStorage(root, cache_dir=tmp_path / "reader-cache"))
    with pytest.raises(CorruptVersion, match=r"^v3: model file is corrupt, its sha256 does not"):
        reader.resolve(3)
    with pytest.raises(CorruptVersion, match=rf"^v1: model file is missing \({root}/versions/1/"):
        reader.resolve(1)
    with pytest.raises(CorruptVersion, match=r"^v1: model file is missing"):
        reader.rollback(reason="back", actor="test")
    assert reader.aliases() == {"production": 2} and len(reader.history()) == 2

    cached = reader.resolve("production").local_path
    assert cached.is_relative_to(tmp_path / "reader-cache")
    cached.write_bytes(b"damaged in the cache")
    assert reader.resolve("production").local_path.read_bytes() == model_file.read_bytes()
    assert reader.load_model("production").output_shape == (None, 10)


def test_a_pinned_model_is_fetched_once_and_checked_on_every_use(
    bucket: str, model_file: Path, digitflow_home: Path
) -> None:
    store = ModelStore(f"{bucket}/models")
    uri = store.register(model_file, {"metrics": {}}).model_uri
    pinned = store.resolve(1)  # the launcher
    assert pinned.local_path == digitflow_home / "cache/models" / f"{pinned.sha256}-model.keras"

    # A worker on that machine, given the URI and sha256, finds the launcher's copy.
    locations.delete(uri)
    assert fetch_file(uri, pinned.sha256) == pinned.local_path
    with pytest.raises(FileNotFoundError):
        fetch_file(uri, "0" * 64)
    locations.put(uri, b"another model")
    with pytest.raises(ChecksumMismatch):
        fetch_file(uri, "0" * 64)
    assert fetch_file(uri, None).read_bytes() == b"another model"  # unchecked, named by content


@pytest.mark.parametrize("bucket", ["gs"], indirect=True)
def test_a_gs_read_is_one_request_with_the_size_its_listing_gave(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests

    uri = f"{bucket}/scans/one.png"
    locations.put(uri, b"a scan")
    [listed] = locations.list_prefix(f"{bucket}/scans/")
    sent: list[str] = []
    send = requests.Session.request

    def counted(session: requests.Session, method: str, url: str, **kwargs: object):
        sent.append(f"{method} {url}")
        return send(session, method, url, **kwargs)

    monkeypatch.setattr(requests.Session, "request", counted)
    assert locations.read(uri, max_mib=1) == b"a scan"
    assert len(sent) == 2, sent  # its size, then that generation's content
    sent.clear()
    assert locations.read(uri, max_mib=1, size=listed.size) == b"a scan"
    assert len(sent) == 1, sent
    sent.clear()
    with pytest.raises(UnreadableError, match=r"^too large: 2\.0 MiB \(limit 1 MiB\)$"):
        locations.read(uri, max_mib=1, size=2 << 20)  # refused by the listed size, unread
    assert sent == []
    locations.put(uri, bytes(2 << 20))  # it grew since it was listed: still refused
    with pytest.raises(UnreadableError, match=r"^too large: 2\.0 MiB \(limit 1 MiB\)$"):
        locations.read(uri, max_mib=1, size=listed.size)


def test_a_missing_bucket_is_one_line(bucket: str) -> None:
    root = f"{bucket}-missing/models"
    with pytest.raises(StoreError) as raised:
        ModelStore(root).check_writable()
    assert re.fullmatch(rf"store root {re.escape(root)} is not writable \(.+\)", str(raised.value))


def test_models_commands_on_a_bucket(bucket: str, model_file: Path) -> None:
    root = f"{bucket}/models"
    store = ModelStore(root)
    store.register(model_file, {"metrics": {"accuracy": 0.97}})
    store.promote(1, reason="first", actor="test")

    assert json_of(models("register", model_file, "--store", root, "--json"))["version"] == 2
    lost = models("promote", "2", "--expected", "v2", "--store", root)
    assert lost.returncode == 2
    assert error_lines(lost) == [
        "error: production points to v1, not the expected v2; nothing changed"
    ]
    change = json_of(models("promote", "v2", "--expected", "v1", "--store", root, "--json"))
    assert (change["from"], change["to"]) == (1, 2)
    back = json_of(models("rollback", "--reason", "7s misread", "--store", root, "--json"))
    assert (back["from"], back["to"], back["reason"]) == (2, 1, "7s misread")

    # The read-only commands import neither TensorFlow nor Keras, on object stores too.
    listed, heavy = models_importing("list", "--store", root, "--json")
    assert heavy == []
    assert [(v["version"], v["aliases"]) for v in json.loads(listed)] == [
        (1, ["production"]),
        (2, []),
    ]
    shown, heavy = models_importing("show", "production", "--store", root, "--json")
    assert heavy == [] and json.loads(shown)["model_uri"] == f"{root}/versions/1/model.keras"
    history, heavy = models_importing("history", "--store", root, "--json")
    assert heavy == []
    assert [(h["from"], h["to"], h["action"]) for h in json.loads(history)] == [
        (None, 1, "promote"),
        (1, 2, "promote"),
        (2, 1, "rollback"),
    ]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
@pytest.mark.parametrize("bucket", ["s3"], indirect=True)
def test_the_nightly_flow_registers_and_promotes_in_a_bucket(bucket: str) -> None:
    from flows.retrain import retrain

    root = f"{bucket}/models"
    quick = {"architecture": "mlp", "epochs": 1, "train_limit": 3000, "test_limit": 1000}
    floors = {"min_accuracy": 0.5, "min_digit_recall": 0.3}
    state = retrain(**quick, **floors, store=root, return_state=True)

    assert state.is_completed(), state.message
    assert state.name == "Promoted"
    store = ModelStore(root)
    assert store.aliases() == {"production": 1}
    [entry] = store.history()
    assert entry.actor == f"prefect-flow-run:{state.state_details.flow_run_id}"
    assert store.get(1).metadata["flow_run_id"] == str(state.state_details.flow_run_id)
    assert store.resolve("production").version == 1
