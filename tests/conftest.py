"""Shared fixtures: real MNIST (from the verified cache, fetched once), an isolated
$DIGITFLOW_HOME per test, one small but real trained model per session, and real S3 and GCS
servers with a fresh bucket per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import ObjectServer, create_bucket, fake_gcs, seaweedfs

from digitflow import config
from digitflow.data import Mnist, load_mnist

REAL_DATA_DIR = config.data_dir()  # resolved before any test changes $DIGITFLOW_HOME
# A test that uses one of these trains a model or starts a server: it is `slow`, left out of
# `make check` (the `slow` marker also marks such tests by hand). So is every `flink` test.
SLOW_FIXTURES = {"trained_model_path", "prefect_api", "object_servers"}
SLOW_MARKERS = {"flink"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marked = {marker.name for marker in item.iter_markers()}
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or SLOW_MARKERS & marked:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def mnist() -> Mnist:
    """The real MNIST arrays; the first run fills the cache from the first working source."""
    return load_mnist(cache=REAL_DATA_DIR / "mnist.npz")


@pytest.fixture(autouse=True)
def digitflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh $DIGITFLOW_HOME for each test, sharing only the verified MNIST cache."""
    home = tmp_path / "digitflow-home"
    home.mkdir()
    REAL_DATA_DIR.mkdir(parents=True, exist_ok=True)
    (home / "data").symlink_to(REAL_DATA_DIR, target_is_directory=True)
    monkeypatch.setenv("DIGITFLOW_HOME", str(home))
    monkeypatch.delenv("DIGITFLOW_STORE", raising=False)
    return home


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny but real Keras model saved as a .keras file, once per session."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    path = tmp_path_factory.mktemp("keras") / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def trained_model_path(mnist: Mnist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CNN trained for one short epoch on part of MNIST, saved as a real .keras file."""
    from digitflow.profiles import train_config
    from digitflow.train import train

    result = train(mnist.subset(train=12_000), train_config("fast", epochs=1), verbose=0)
    path = tmp_path_factory.mktemp("model") / "cnn.keras"
    result.model.save(path)
    return path


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    """A temporary Prefect API (SQLite) for a module's flow runs; results kept in a temp dir.

    Module-scoped: the end-to-end test runs its own real server, and must not run beside this one.
    """
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    with (
        temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}),
        prefect_test_harness(server_startup_timeout=180),
    ):
        yield


@pytest.fixture(scope="session")
def object_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ObjectServer]]:
    """SeaweedFS (s3) and fake-gcs-server (gs) on 127.0.0.1, found by clients through the
    standard variables, which are set for the rest of the session."""
    try:
        with (
            seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as s3,
            fake_gcs(tmp_path_factory.mktemp("fake-gcs")) as gs,
            pytest.MonkeyPatch.context() as patch,
        ):
            for name, value in {**s3.env, **gs.env}.items():
                patch.setenv(name, value)
            yield {"s3": s3, "gs": gs}
    except FileNotFoundError as missing:  # the server's binary is not installed here
        pytest.skip(f"object-store server cannot run: {missing}")


@pytest.fixture(params=["s3", "gs"])
def bucket(request: pytest.FixtureRequest, object_servers: dict[str, ObjectServer]) -> str:
    """A new empty bucket on each server in turn: `s3://...`, then `gs://...`."""
    return create_bucket(object_servers[request.param], f"test-{uuid.uuid4().hex[:12]}")
