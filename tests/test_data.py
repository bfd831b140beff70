"""MNIST loading: sources in order, checksum verification, the cache, and the real data set."""

from __future__ import annotations

import numpy as np
import pytest

from digitflow.data import (
    MNIST_SHA256,
    DataError,
    Source,
    checksum,
    load_mnist,
    load_npz,
    save_npz,
)


def tiny_arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 20, dtype=np.uint8),
        rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 5, dtype=np.uint8),
    )


def failing(message: str):
    def load():
        raise ConnectionError(message)

    return load


def test_loads_fixture_npz_and_reports_source_and_checksum(tmp_path):
    arrays = tiny_arrays()
    fixture = tmp_path / "fixture.npz"
    save_npz(fixture, arrays)

    mnist = load_mnist(
        cache=tmp_path / "cache.npz",
        sources=[Source("fixture", lambda: load_npz(fixture))],
        expected_sha256=checksum(*arrays),
    )

    assert mnist.source == "fixture"
    assert mnist.checksum == checksum(*arrays)
    np.testing.assert_array_equal(mnist.x_train, arrays[0])
    np.testing.assert_array_equal(mnist.y_test, arrays[3])


def test_falls_through_failed_sources_and_fills_the_cache(tmp_path):
    arrays = tiny_arrays()
    cache = tmp_path / "data" / "mnist.npz"
    sources = [Source("offline mirror", failing("no route")), Source("good", lambda: arrays)]

    mnist = load_mnist(cache=cache, sources=sources, expected_sha256=checksum(*arrays))

    assert mnist.source == "good"
    assert checksum(*load_npz(cache)) == checksum(*arrays)


def test_checksum_mismatch_is_an_error_naming_every_source(tmp_path):
    arrays = tiny_arrays()
    sources = [
        Source("unreachable", failing("name or service not known")),
        Source("bad", lambda: arrays),
    ]

    with pytest.raises(DataError) as raised:
        load_mnist(cache=tmp_path / "c.npz", sources=sources, expected_sha256="0" * 64)

    message = str(raised.value)
    assert "unreachable: ConnectionError: name or service not known" in message
    assert f"bad: checksum {checksum(*arrays)} != expected {'0' * 64}" in message
    assert not (tmp_path / "c.npz").exists()


def test_wrong_shapes_are_rejected_before_the_checksum(tmp_path):
    x, y, xt, yt = tiny_arrays()
    sources = [Source("flat", lambda: (x.reshape(20, -1), y, xt, yt))]

    with pytest.raises(DataError, match=r"flat: ValueError: x_train has shape \(20, 784\)"):
        load_mnist(cache=tmp_path / "c.npz", sources=sources, expected_sha256=MNIST_SHA256)


def test_subset_marks_its_checksum(mnist):
    small = mnist.subset(train=100, test=10)
    assert len(small.x_train) == 100 and len(small.y_test) == 10
    assert small.checksum == f"{mnist.checksum}[:100,:10]"


def test_real_mnist_is_the_standard_split(mnist):
    assert mnist.checksum == MNIST_SHA256
    assert mnist.x_train.shape == (60_000, 28, 28) and mnist.x_test.shape == (10_000, 28, 28)
    assert mnist.x_train.dtype == np.uint8
    # MNIST's well-known first labels of each split.
    assert mnist.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
