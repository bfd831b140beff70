"""Model store API on real files: a local directory, and for the core operations also real S3
(SeaweedFS) and GCS (fake-gcs-server) buckets."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import memory_backend
import pytest
from servers import IN_PROCESS_STORE_KINDS, ObjectServer, create_bucket

from digitflow.locations import ChecksumMismatch, sha256_file
from model_store import (
    ANY,
    AliasNotFound,
    CorruptVersion,
    InvalidModel,
    InvalidReference,
    ModelStore,
    PromotionConflict,
    StoreError,
    VersionNotFound,
    build_metadata,
)
from model_store.metadata import complete, to_json
from model_store.storage import Storage, fetch_file, open_storage


def metadata(accuracy: float) -> dict:
    """What the nightly flow registers."""
    return build_metadata(
        metrics={"accuracy": accuracy, "loss": 0.25, "per_digit": {"0": 0.99, "1": 0.98}},
        params={"epochs": 1, "batch_size": 128},
        architecture="dense",
        dataset_checksum="sha256:0123",
        flow_run_id="flow-run-42",
    )


@pytest.fixture(params=IN_PROCESS_STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModelStore]:
    """The same store in a local directory, under a new bucket on each object store, and on a
    backend that the store's code has never heard of: `mem://`, registered for the test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    if request.param == "local":
        yield ModelStore(tmp_path / "store")
    elif request.param == "mem":
        with memory_backend.registered():
            yield ModelStore(f"{memory_backend.SCHEME}://{name}/models")
    else:
        servers: dict[str, ObjectServer] = request.getfixturevalue("object_servers")
        yield ModelStore(f"{create_bucket(servers[request.param], name)}/models")


def store_with_versions(root: Path, model_file: Path, count: int) -> ModelStore:
    store = ModelStore(root)
    for n in range(count):
        store.register(model_file, metadata(0.9 + n / 100))
    return store


def test_register_list_show(store: ModelStore, model_file: Path) -> None:
    first = store.register(model_file, metadata(0.91))
    second = store.register(model_file, {"metrics": {"loss": 0.5}})

    assert [v.version for v in store.list_versions()] == [1, 2]
    assert first.version == 1 and second.version == 2
    shown = store.get("v1")
    assert store.get(1) == store.get("1") == shown
    assert shown.metrics["accuracy"] == 0.91
    assert shown.metadata["flow_run_id"] == "flow-run-42"
    assert shown.metadata["params"] == {"epochs": 1, "batch_size": 128}
    assert shown.metadata["library_versions"]["keras"]
    assert shown.metadata["architecture"] == "dense"
    assert "code_version" in shown.metadata and shown.created_at
    # The store fills in what the caller did not give.
    assert second.metrics["accuracy"] is None
    assert second.metadata["architecture"] == "Sequential(InputLayer, Flatten, Dense)"
    as_json = json.loads(json.dumps(second.to_dict()))
    assert {"version", "aliases", "created_at", "metrics"} <= as_json.keys()


def test_promote_rollback_and_history(store: ModelStore, model_file: Path) -> None:
    for accuracy in (0.90, 0.91, 0.92):
        store.register(model_file, metadata(accuracy))

    store.promote(1, expected=None, reason="first model", actor="prefect:run-1")
    store.promote("v2", expected=1, reason="gate: +0.01", actor="prefect:run-2")
    store.promote(3, reason="gate: +0.01", actor="prefect:run-3")
    store.promote(1, alias="canary", reason="try it", actor="cli:ann@host")
    assert store.aliases() == {"production": 3, "canary": 1}
    assert store.get("production").aliases == ("production",)

    back = store.rollback(reason="bad digits 7", actor="cli:bob@host")
    assert (back.from_version, back.to_version, back.action) == (3, 2, "rollback")
    store.rollback(reason="still bad", actor="cli:bob@host")
    assert store.aliases()["production"] == 1
    with pytest.raises(StoreError, match="no previous version"):
        store.rollback(reason="again", actor="cli:bob@host")

    production = store.history("production")
    assert [(e.from_version, e.to_version) for e in production] == [
        (None, 1),
        (1, 2),
        (2, 3),
        (3, 2),
        (2, 1),
    ]
    assert production[1].reason == "gate: +0.01" and production[1].actor == "prefect:run-2"
    assert production[3].reason == "bad digits 7" and production[3].actor == "cli:bob@host"
    assert len(store.history()) == 6
    assert {"alias", "from", "to", "reason", "at"} <= production[0].to_dict().keys()


def test_compare_and_swap_conflict_changes_nothing(store: ModelStore, model_file: Path) -> None:
    for accuracy in (0.90, 0.91):
        store.register(model_file, metadata(accuracy))
    store.promote(1, reason="first", actor="test")

    with pytest.raises(PromotionConflict, match="points to v1, not the expected none"):
        store.promote(2, expected=None, reason="race", actor="test")
    with pytest.raises(PromotionConflict, match="not the expected v2"):
        store.promote(2, expected="v2", reason="race", actor="test")
    assert store.aliases() == {"production": 1}
    assert len(store.history()) == 1

    store.promote(2, expected=1, reason="won", actor="test")
    store.promote(1, expected=ANY, reason="no check", actor="test")
    assert store.aliases() == {"production": 1}
    with pytest.raises(StoreError, match="already points to v1"):
        store.promote(1, reason="again", actor="test")


class Interrupted:
    """A store's storage on which another writer acts just before each of the first `times`
    writes: between this writer's read and its conditional write."""

    def __init__(self, inner: Storage, meddle: Callable[[], Any], times: int = 1) -> None:
        self._inner, self._meddle, self._times = inner, meddle, times
        self.root = inner.root

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def write_if(self, *args: Any, **kwargs: Any) -> None:
        self._interrupt()
        self._inner.write_if(*args, **kwargs)

    def publish(self, *args: Any, **kwargs: Any) -> None:
        self._interrupt()
        self._inner.publish(*args, **kwargs)

    def _interrupt(self) -> None:
        if self._times > 0:
            self._times -= 1
            self._meddle()


def interrupted(store: ModelStore, meddle: Callable[[], Any], times: int = 1) -> ModelStore:
    """The same store, seen by a writer that `meddle` interrupts."""
    return ModelStore(storage=Interrupted(open_storage(store.root), meddle, times))


def test_a_write_between_read_and_write_is_never_lost(store: ModelStore, model_file: Path) -> None:
    for accuracy in (0.90, 0.91, 0.92):
        store.register(model_file, metadata(accuracy))
    store.promote(1, reason="first", actor="test")

    other = interrupted(store, lambda: store.promote(3, expected=1, reason="b", actor="b"))
    with pytest.raises(PromotionConflict, match="points to v3, not the expected v1"):
        other.promote(2, expected=1, reason="a", actor="a")
    assert store.aliases() == {"production": 3}
    # ANY tries again on the new table; a rollback pops the rollback stack as it is then.
    interrupted(store, lambda: store.promote(1, reason="b", actor="b")).promote(
        2, reason="a", actor="a"
    )
    interrupted(store, lambda: store.rollback(reason="b", actor="b")).rollback(
        reason="a", actor="a"
    )
    assert [(e.from_version, e.to_version, e.actor) for e in store.history()] == [
        (None, 1, "test"),
        (1, 3, "b"),
        (3, 1, "b"),
        (1, 2, "a"),
        (2, 1, "b"),
        (1, 3, "a"),
    ]
    assert store.aliases() == {"production": 3}

    interrupted(store, lambda: store.annotate(1, {"b": 2})).annotate(1, {"a": 3})
    assert {k: store.get(1).metadata[k] for k in "ab"} == {"a": 3, "b": 2}
    interrupted(store, lambda: store.register(model_file, metadata(0.93))).register(
        model_file, metadata(0.94)
    )
    assert [(v.version, v.metrics["accuracy"]) for v in store.list_versions()[3:]] == [
        (4, 0.93),
        (5, 0.94),
    ]
    assert store.resolve(5).sha256 == sha256_file(model_file)


def test_a_writer_that_keeps_losing_gives_up_with_one_line(
    tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("model_store.conditional_writes._ROUNDS", 3)
    store = store_with_versions(tmp_path / "store", model_file, 1)
    loser = interrupted(store, lambda: store.annotate(1, {"b": uuid.uuid4().hex}), times=3)
    with pytest.raises(StoreError, match=r"metadata\.json kept changing: 3 concurrent writes won"):
        loser.annotate(1, {"a": 1})
    assert "a" not in store.get(1).metadata


def test_resolve_and_load_with_keras(store: ModelStore, model_file: Path) -> None:
    store.register(model_file, metadata(0.9))
    store.promote(1, reason="first", actor="test")

    resolved = store.resolve("production")
    assert resolved.version == 1
    assert resolved.local_path.read_bytes() == model_file.read_bytes()
    assert resolved.metadata["metrics"]["accuracy"] == 0.9
    assert store.load_model("production").output_shape == (None, 10)

    assert resolved.sha256 == sha256_file(model_file)
    outside = store.resolve(model_file)
    assert (outside.version, outside.local_path) == (None, model_file)
    assert outside.sha256 == resolved.sha256
    assert store.resolve(str(model_file)).local_path == model_file


def test_fetch_file_checks_a_local_file_where_it_is(tmp_path: Path, model_file: Path) -> None:
    digest = sha256_file(model_file)
    assert fetch_file(str(model_file), digest) == model_file
    assert fetch_file(str(model_file), None) == model_file
    with pytest.raises(ChecksumMismatch):
        fetch_file(str(model_file), "0" * 64)
    with pytest.raises(FileNotFoundError):
        fetch_file(str(tmp_path / "gone.keras"), digest)


@pytest.mark.parametrize("root", ["hdfs://cluster/models", "s3:///models", "gs://"])
def test_unsupported_store_uri_is_a_clear_error(root: str) -> None:
    message = f"^unsupported store URI {re.escape(root)}: use a local path, s3:// or gs://$"
    with pytest.raises(StoreError, match=message):
        ModelStore(root)


def test_corrupt_model_file(tmp_path: Path, model_file: Path) -> None:
    store = store_with_versions(tmp_path / "store", model_file, 2)
    store.promote(1, reason="first", actor="test")
    (tmp_path / "store" / "versions" / "2" / "model.keras").write_bytes(b"garbage")

    for call in (
        lambda: store.resolve(2),
        lambda: store.load_model(2),
        lambda: store.promote(2, reason="x", actor="test"),
    ):
        with pytest.raises(CorruptVersion, match="v2: model file is corrupt"):
            call()
    assert store.aliases() == {"production": 1}
    assert store.load_model("production").output_shape == (None, 10)


def test_missing_model_file(tmp_path: Path, model_file: Path) -> None:
    store = store_with_versions(tmp_path / "store", model_file, 2)
    store.promote(2, reason="first", actor="test")
    store.promote(1, reason="second", actor="test")
    (tmp_path / "store" / "versions" / "2" / "model.keras").unlink()

    with pytest.raises(CorruptVersion, match="v2: model file is missing"):
        store.resolve(2)
    with pytest.raises(CorruptVersion, match="v2: model file is missing"):
        store.rollback(reason="back", actor="test")
    assert store.aliases() == {"production": 1}
    assert len(store.history()) == 2


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[1, 2]", json.dumps({"version": 7, "metrics": {}}).encode(), None],
    ids=["not-json", "not-object", "wrong-version", "a-directory"],
)
def test_corrupt_metadata(tmp_path: Path, model_file: Path, content: bytes | None) -> None:
    store = store_with_versions(tmp_path / "store", model_file, 2)
    store.promote(1, reason="first", actor="test")
    path = tmp_path / "store" / "versions" / "2" / "metadata.json"
    if content is None:
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes(content)

    with pytest.raises(CorruptVersion, match=r"v2: metadata\.json"):
        store.get(2)
    with pytest.raises(CorruptVersion, match=r"v2: metadata\.json"):
        store.promote(2, reason="x", actor="test")
    # One corrupt version does not hide the others: it is listed as corrupt.
    assert [v.version for v in store.list_versions()] == [1]
    listing = store.listing()
    assert [v.version for v in listing.versions] == [1]
    [corrupt] = listing.corrupt
    assert (corrupt.version, corrupt.aliases) == (2, ())
    assert corrupt.problem.startswith("v2: metadata.json")
    assert store.aliases() == {"production": 1}
    assert store.resolve("production").version == 1


def legacy_version(root: Path, number: int, model: Path) -> None:
    """A version as digitflow wrote it before infra validation: same files, no checks."""
    directory = root / "versions" / str(number)
    directory.mkdir(parents=True)
    shutil.copyfile(model, directory / "model.keras")
    record = {**complete({"metrics": {}}), "version": number}
    record["model_sha256"] = sha256_file(directory / "model.keras")
    (directory / "metadata.json").write_bytes(to_json(record))


def bad_model(kind: str, directory: Path) -> Path:
    """A real saved Keras model that must never serve, for reason `kind`."""
    import keras
    import numpy as np

    layers = keras.layers
    build = {
        "lambda": lambda: [layers.Flatten(), layers.Lambda(lambda x: x * 2), layers.Dense(10)],
        "flat-input": lambda: [layers.Dense(10, activation="softmax")],
        "five-classes": lambda: [layers.Flatten(), layers.Dense(5, activation="softmax")],
        "no-softmax": lambda: [layers.Flatten(), layers.Dense(10, kernel_initializer="ones")],
        "nan-weights": lambda: [layers.Flatten(), layers.Dense(10, activation="softmax")],
    }[kind]
    model = keras.Sequential([keras.Input((784,) if kind == "flat-input" else (28, 28)), *build()])
    if kind == "nan-weights":
        model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
    path = directory / f"{kind}.keras"
    model.save(path)
    return path


REFUSALS = {
    "lambda": r"refused: Keras could not load the model \(.*Lambda.*safe_mode",
    "flat-input": r"refused: input shape is \(None, 784\), expected \(None, 28, 28\)$",
    "five-classes": r"refused: output shape is \(None, 5\), expected \(None, 10\)$",
    "no-softmax": r"refused: on 20 MNIST test digits .* not probabilities",
    "nan-weights": r"refused: on 20 MNIST test digits .* not finite",
}


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_models_that_cannot_serve_are_never_registered_or_promoted(
    tmp_path: Path, model_file: Path, kind: str
) -> None:
    root = tmp_path / "store"
    store = store_with_versions(root, model_file, 1)
    store.promote(1, reason="first", actor="test")
    bad = bad_model(kind, tmp_path)
    legacy_version(root, 2, bad)  # registered by a digitflow without validation
    before = sorted(p.relative_to(root) for p in root.rglob("*"))

    with pytest.raises(InvalidModel, match=f"^{re.escape(str(bad))}: {REFUSALS[kind]}"):
        store.register(bad, metadata(0.99))
    with pytest.raises(InvalidModel, match=f"^v2: {REFUSALS[kind]}"):
        store.promote(2, expected=1, reason="gate passed", actor="test")

    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert store.aliases() == {"production": 1} and len(store.history()) == 1
    assert store.load_model("production").output_shape == (None, 10)


def test_lambda_layers_are_refused_by_safe_mode(tmp_path: Path) -> None:
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x * 2)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    store = ModelStore(tmp_path / "store")
    with pytest.raises(InvalidModel, match=r"lambda\.keras: refused: Keras could not load"):
        store.register(path, {"metrics": {}})
    legacy_version(tmp_path / "store", 1, path)
    with pytest.raises(CorruptVersion, match=r"v1: Keras could not load.*safe_mode"):
        store.load_model(1)


@pytest.mark.parametrize(
    "ref",
    ["../1", "1/../2", "versions/1", "v0", "0", -1, "", "v1.5", "Production", "/etc/passwd", True],
)
def test_references_that_are_not_versions_or_aliases(
    tmp_path: Path, model_file: Path, ref: object
) -> None:
    store = store_with_versions(tmp_path / "store", model_file, 1)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(InvalidReference):
        store.get(ref)  # type: ignore[arg-type]
    with pytest.raises(InvalidReference):
        store.promote(ref, reason="x", actor="test")  # type: ignore[arg-type]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_unknown_names_and_bad_aliases(tmp_path: Path, model_file: Path) -> None:
    store = store_with_versions(tmp_path / "store", model_file, 1)
    with pytest.raises(VersionNotFound, match="v9 does not exist"):
        store.get(9)
    with pytest.raises(AliasNotFound, match="unknown alias 'production'"):
        store.resolve("production")
    with pytest.raises(AliasNotFound):
        store.rollback(reason="x", actor="test")
    for alias in ("../production", "v3", "Prod", "a/b"):
        with pytest.raises(InvalidReference):
            store.promote(1, alias=alias, reason="x", actor="test")
    for alias in ("none", "any"):  # `--expected none` and ANY: an alias could not be told apart
        reserved = f"invalid alias '{alias}': any, none are reserved"
        with pytest.raises(InvalidReference, match=reserved):
            store.promote(1, alias=alias, reason="x", actor="test")
        with pytest.raises(InvalidReference, match="reserved"):
            store.get(alias)
    with pytest.raises(InvalidReference, match="expected must be a version"):
        store.promote(1, expected="production", reason="x", actor="test")
    with pytest.raises(StoreError, match="reason"):
        store.promote(1, reason=" ", actor="test")
    with pytest.raises(InvalidReference):
        store.resolve("../../etc/passwd")
    assert store.aliases() == {} and store.history() == []


def test_register_rejects_bad_input_and_leaves_no_trace(tmp_path: Path, model_file: Path) -> None:
    store = ModelStore(tmp_path / "store")
    text_file = tmp_path / "notes.keras"
    text_file.write_text("not a zip")

    with pytest.raises(CorruptVersion, match=r"not a valid \.keras model file"):
        store.register(text_file, {"metrics": {}})
    with pytest.raises(CorruptVersion, match=r"not a valid \.keras model file"):
        store.resolve(text_file)
    with pytest.raises(StoreError, match="model file not found"):
        store.register(tmp_path / "missing.keras", {"metrics": {}})
    with pytest.raises(StoreError, match="accuracy must be a number"):
        store.register(model_file, {"metrics": {"accuracy": "high"}})
    with pytest.raises(StoreError, match=r"metrics\.loss must be a finite number >= 0, got nan"):
        store.register(model_file, {"metrics": {"loss": math.nan}})
    with pytest.raises(StoreError, match="cannot store as JSON"):
        store.register(model_file, {"metrics": {}, "note": math.nan})
    assert store.list_versions() == []
    assert list((tmp_path / "store" / ".staging").iterdir()) == []


def test_root_location(
    tmp_path: Path, digitflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ModelStore().root == str(digitflow_home / "models")
    monkeypatch.setenv("DIGITFLOW_STORE", str(tmp_path / "shared"))
    assert ModelStore().root == str(tmp_path / "shared")
    assert ModelStore(tmp_path / "explicit").root == str(tmp_path / "explicit")


def test_history_skips_and_reports_unreadable_entries(tmp_path: Path, model_file: Path) -> None:
    store = store_with_versions(tmp_path / "store", model_file, 3)
    store.promote(1, reason="first", actor="test")
    store.promote(2, reason="second", actor="test")
    log_file = tmp_path / "store" / "history.jsonl"
    with log_file.open("ab") as fh:  # a crash in the middle of an append
        fh.write(b'{"action": "promote", "alias": "produc')

    log = store.history_log()
    assert [(e.from_version, e.to_version) for e in log.entries] == [(None, 1), (1, 2)]
    [torn] = log.problems
    assert torn.startswith("history entry 3 (the last, probably cut short by a crash)")
    assert '{"action": "promote", "alias": "produc' in torn
    assert store.history() == log.entries

    # The next change starts a line of its own: the fragment is now damage in the middle.
    store.promote(3, reason="third", actor="test")
    with log_file.open("ab") as fh:
        fh.write(b"\xff\xfe not json\n")
    log = store.history_log("production")
    assert [(e.from_version, e.to_version) for e in log.entries] == [(None, 1), (1, 2), (2, 3)]
    assert [problem.split(" is ")[0] for problem in log.problems] == [
        "history entry 3 (of 5)",
        "history entry 5 (the last, probably cut short by a crash)",
    ]
    assert store.aliases() == {"production": 3}


def test_annotate_merges_keys_atomically_and_never_changes_identity(
    store: ModelStore, model_file: Path
) -> None:
    registered = store.register(model_file, metadata(0.9))
    race = {"lost_promotion_race": {"to": 7, "at": "2025-01-31T02:00:00+00:00"}}

    annotated = store.annotate("v1", race)
    assert annotated.metadata == {**registered.metadata, **race}
    assert store.get(1) == annotated
    later = store.annotate(1, {"lost_promotion_race": None, "note": "checked"})
    assert later.metadata["lost_promotion_race"] is None and later.metadata["note"] == "checked"
    assert store.resolve(1).local_path.read_bytes() == model_file.read_bytes()

    for updates, message in [
        ({"model_sha256": "0" * 64}, "cannot annotate model_sha256"),
        ({"version": 2, "created_at": "now"}, "cannot annotate created_at, version"),
        ({"metrics": [1]}, "metrics must be a JSON object"),
        ({"metrics": {"accuracy": 1.5}}, r"metrics\.accuracy must be a number in \[0, 1\]"),
        ({"score": math.inf}, "cannot store as JSON"),
        ({1: "x"}, "string keys"),
    ]:
        with pytest.raises(StoreError, match=message):
            store.annotate(1, updates)  # type: ignore[arg-type]
    with pytest.raises(VersionNotFound):
        store.annotate(2, {"note": "x"})
    assert store.get(1) == later


def test_check_writable_on_a_real_local_store(tmp_path: Path, model_file: Path) -> None:
    missing = tmp_path / "new" / "store"
    ModelStore(missing).check_writable()
    assert missing.is_dir() and list(missing.iterdir()) == []  # the root, and nothing in it

    a_file = tmp_path / "models.txt"
    a_file.write_text("not a store")
    for root in (a_file, a_file / "store"):
        message = f"^store root {re.escape(str(root))} is not .*directory"
        with pytest.raises(StoreError, match=message):
            ModelStore(root).check_writable()
    assert a_file.read_text() == "not a store"

    store = store_with_versions(tmp_path / "store", model_file, 1)
    store.check_writable()
    (tmp_path / "store" / "aliases.json").write_text("{torn")
    with pytest.raises(StoreError, match=r"aliases\.json is corrupt"):
        store.check_writable()


def test_check_writable_refuses_a_read_only_directory(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    root.chmod(0o555)
    check = "import sys, model_store as m; m.ModelStore(sys.argv[1]).check_writable()"
    command = [sys.executable, "-c", check, str(root)]
    if os.geteuid() == 0:  # root writes anywhere: drop every capability for the check
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv to drop privileges")
        command = [setpriv, "--bounding-set=-all", "--inh-caps=-all", *command]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    finally:
        root.chmod(0o755)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"model_store.errors.StoreError: store root {root} is not writable (Permission denied)"
    )
    assert list(root.iterdir()) == []
