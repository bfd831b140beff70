"""The model store under real concurrency and real crashes: separate processes and SIGKILL.

The races run on a local store and on real S3 (SeaweedFS) and GCS (fake-gcs-server) buckets.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from servers import STORE_KINDS, ObjectServer, create_bucket

from digitflow.locations import sha256_file
from model_store import ModelStore


def three_versions(root: str | Path, model_file: Path) -> ModelStore:
    """A store with three registered versions, v1 in production."""
    store = ModelStore(root)
    for accuracy in (0.90, 0.91, 0.92):
        store.register(model_file, {"metrics": {"accuracy": accuracy}})
    store.promote(1, reason="first", actor="test")
    return store


@pytest.fixture
def store(tmp_path: Path, model_file: Path) -> ModelStore:
    """Three versions in a local store, v1 in production."""
    return three_versions(tmp_path / "store", model_file)


@pytest.fixture(params=STORE_KINDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path, model_file: Path) -> ModelStore:
    """Three versions, v1 in production, in a local store and under a new bucket on each
    object store."""
    if request.param == "local":
        return three_versions(tmp_path / "store", model_file)
    servers: dict[str, ObjectServer] = request.getfixturevalue("object_servers")
    bucket = create_bucket(servers[request.param], f"test-{uuid.uuid4().hex[:12]}")
    return three_versions(f"{bucket}/models", model_file)


def start(code: str, *args: object) -> subprocess.Popen[str]:
    """Run `code` in a fresh Python process with `args` as sys.argv[1:]."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: Callable[[], bool], child: subprocess.Popen[str]) -> None:
    """Poll `condition` while `child` runs; fail with its stderr if it dies first."""
    deadline = time.monotonic() + 60
    while not condition():
        if child.poll() is not None:
            pytest.fail(f"child exited early: {child.stderr.read() if child.stderr else ''}")
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the child")
        time.sleep(0.01)


PROMOTE = """
    import sys, time
    from pathlib import Path
    from model_store import ModelStore, PromotionConflict

    store, go = ModelStore(sys.argv[1]), Path(sys.argv[2])
    import keras  # promotion validates the model: import it before the start line, not after
    for line in sys.stdin:  # one race per line: VERSION EXPECTED TURN
        version, expected, turn = map(int, line.split())
        print("ready", flush=True)
        while not go.with_suffix(f".{turn}").exists():
            time.sleep(0.001)
        try:
            store.promote(
                version, expected=expected, reason=f"gate passed v{version}", actor=f"run-{version}"
            )
        except PromotionConflict as conflict:
            print(conflict, flush=True)
        else:
            print("won", flush=True)
"""


def test_two_processes_promoting_at_once(any_store: ModelStore, tmp_path: Path) -> None:
    store, go = any_store, tmp_path / "go"
    children = [start(PROMOTE, store.root, go) for _ in range(2)]
    production, changes = 1, [(None, 1, "test")]
    for turn in range(3):  # each turn, both race from the same production to another version
        targets = [v for v in (1, 2, 3) if v != production]
        for child, version in zip(children, targets, strict=True):
            assert child.stdin and child.stdout
            child.stdin.write(f"{version} {production} {turn}\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "ready"
        go.with_suffix(f".{turn}").touch()
        results = {v: c.stdout.readline().strip() for v, c in zip(targets, children, strict=True)}

        [winner] = [version for version, result in results.items() if result == "won"]
        [lost] = [result for result in results.values() if result != "won"]
        expected = f"production points to v{winner}, not the expected v{production}"
        assert lost == f"{expected}; nothing changed"
        changes.append((production, winner, f"run-{winner}"))
        production = winner
        assert store.aliases() == {"production": winner}
        assert [(e.from_version, e.to_version, e.actor) for e in store.history()] == changes
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err


READ_ALIASES = """
    import json, sys
    from pathlib import Path
    from model_store import ModelStore

    store, stop = ModelStore(sys.argv[1]), Path(sys.argv[2])
    print("ready", flush=True)
    seen = set()
    while not stop.exists():
        seen.add(store.aliases()["production"])  # a torn aliases.json would raise here
    print(json.dumps(sorted(seen)))
"""


def test_readers_never_see_a_half_written_pointer(store: ModelStore, tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    reader = start(READ_ALIASES, store.root, stop)
    assert reader.stdout and reader.stdout.readline().strip() == "ready"
    for n in range(30):
        store.promote(2 + n % 2, reason="flip", actor="test")
    stop.touch()
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert set(json.loads(out)) <= {1, 2, 3}


REGISTER = """
    import sys
    from model_store import ModelStore

    ModelStore(sys.argv[1]).register(sys.argv[2], {"metrics": {"accuracy": 0.99}})
"""


def open_fifo_for_writing(fifo: Path, child: subprocess.Popen[str]) -> int:
    """Open the write end once the child has opened the read end."""
    fd = -1

    def opened() -> bool:
        nonlocal fd
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            return False
        return True

    wait_for(opened, child)
    return fd


def test_crash_while_copying_a_model_leaves_production_intact(
    store: ModelStore, tmp_path: Path, model_file: Path
) -> None:
    fifo = tmp_path / "incoming.keras"
    os.mkfifo(fifo)
    child = start(REGISTER, store.root, fifo)
    data = model_file.read_bytes()
    fd = open_fifo_for_writing(fifo, child)
    try:
        os.write(fd, data[: len(data) // 2])
        staging = Path(store.root) / ".staging"
        wait_for(lambda: any(staging.glob("*/model.keras")), child)
        child.kill()  # SIGKILL in the middle of copying the model in
        child.wait(timeout=60)
    finally:
        os.close(fd)

    assert child.returncode == -9
    assert [v.version for v in store.list_versions()] == [1, 2, 3]
    assert store.aliases() == {"production": 1}
    assert store.load_model("production").output_shape == (None, 10)
    assert store.register(model_file, {"metrics": {}}).version == 4


REGISTER_AT_ONCE = """
    import sys, time
    from pathlib import Path
    from model_store import ModelStore

    store, go, models = ModelStore(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    import keras  # registration validates the model: import it before the start line, not after
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    for model in models:
        print(store.register(model, {"metrics": {}, "source": model}).version, flush=True)
"""


@pytest.fixture(scope="module")
def distinct_models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three small, valid models whose files all differ."""
    import keras

    directory = tmp_path_factory.mktemp("distinct")
    for n in range(3):
        layers = [keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(10)]
        keras.Sequential([*layers, keras.layers.Softmax()]).save(directory / f"m{n}.keras")
    paths = sorted(directory.glob("*.keras"))
    assert len({sha256_file(path) for path in paths}) == 3
    return paths


def test_processes_registering_at_once_get_distinct_versions(
    any_store: ModelStore, tmp_path: Path, distinct_models: list[Path]
) -> None:
    store, go = any_store, tmp_path / "go"
    children = [start(REGISTER_AT_ONCE, store.root, go, model) for model in distinct_models]
    for child in children:
        assert child.stdout and child.stdout.readline().strip() == "ready"
    go.touch()
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err

    versions = store.list_versions()
    assert [v.version for v in versions] == [1, 2, 3, 4, 5, 6]
    for version in versions[3:]:  # each its own model, and the metadata registered with it
        source = Path(version.metadata["source"])
        assert version.metadata["model_sha256"] == sha256_file(source)
        assert store.resolve(version.version).local_path.read_bytes() == source.read_bytes()
    assert sorted(str(v.metadata["source"]) for v in versions[3:]) == sorted(
        map(str, distinct_models)
    )


REGISTER_THEN_PROMOTE = """
    import sys
    from model_store import ModelStore

    store = ModelStore(sys.argv[1])
    version = store.register(sys.argv[2], {"metrics": {"accuracy": 0.99}})
    print(version.version, flush=True)
    sys.stdin.readline()  # killed here: the model is written, the pointer is not
    store.promote(version.version, reason="gate passed", actor="flow")
"""


def test_crash_between_model_and_pointer_leaves_production_intact(
    store: ModelStore, model_file: Path
) -> None:
    child = start(REGISTER_THEN_PROMOTE, store.root, model_file)
    assert child.stdout and child.stdout.readline().strip() == "4"
    child.kill()
    child.wait(timeout=60)

    assert store.aliases() == {"production": 1}
    assert len(store.history()) == 1
    assert [v.version for v in store.list_versions()] == [1, 2, 3, 4]
    resolved = store.resolve("production")
    assert resolved.version == 1 and resolved.local_path.read_bytes() == model_file.read_bytes()
    store.promote(4, expected=1, reason="the flow's next run", actor="flow")
    assert store.aliases() == {"production": 4}


ANNOTATE = """
    import sys
    from model_store import ModelStore

    store, key, rounds = ModelStore(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    for n in range(rounds):
        store.annotate(1, {key: n})
"""


def test_concurrent_annotations_lose_no_update(any_store: ModelStore) -> None:
    store = any_store
    identity = {k: store.get(1).metadata[k] for k in ("version", "model_sha256", "created_at")}
    rounds, keys = 30, [f"note_{n}" for n in range(4)]
    children = [start(ANNOTATE, store.root, key, rounds) for key in keys]
    while any(child.poll() is None for child in children):
        store.get(1)  # a torn metadata.json would raise CorruptVersion here
    for child in children:
        assert child.returncode == 0, child.stderr.read() if child.stderr else ""

    metadata = store.get(1).metadata
    assert {key: metadata.get(key) for key in keys} == dict.fromkeys(keys, rounds - 1)
    assert {k: metadata[k] for k in identity} == identity
    assert store.aliases() == {"production": 1}
