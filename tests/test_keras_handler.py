"""The bulk job's model handler: a real saved .keras model, converted to LiteRT and run."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from beam_jobs.keras_handler import KerasModelHandler, sha256_file
from digitflow.data import model_input
from digitflow.models import load_model
from digitflow.preprocess import to_mnist
from digitflow.scans import write_scans
from model_store.object_storage import model_cache

DIGITFLOW = str(Path(sys.executable).with_name("digitflow"))


def test_litert_gives_the_keras_models_probabilities(trained_model_path, mnist):
    images = model_input(mnist.x_test[:300])
    expected = load_model(trained_model_path).predict_on_batch(images)
    handler = KerasModelHandler(str(trained_model_path), sha256=sha256_file(trained_model_path))
    model = handler.load_model()

    results = list(handler.run_inference(list(images[:256]), model))
    results += handler.run_inference(list(images[256:]), model)  # a smaller, last batch

    probabilities = np.stack([result.inference for result in results])
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_array_equal(np.stack([result.example for result in results]), images)


def test_the_conversion_is_cached_and_a_damaged_copy_is_replaced(trained_model_path, mnist):
    sha256 = sha256_file(trained_model_path)
    handler = KerasModelHandler(str(trained_model_path), sha256=sha256)
    handler.load_model()
    (cached,) = model_cache().glob(f"{sha256}-*.tflite")
    converted = cached.stat()

    handler.load_model()
    assert cached.stat().st_mtime_ns == converted.st_mtime_ns  # reused, not converted again

    cached.write_bytes(b"damaged")
    model = handler.load_model()
    assert sha256_file(cached) == cached.stem.removeprefix(f"{sha256}-")
    digits = model.predict(model_input(mnist.x_test[:50])).argmax(axis=1)
    assert (digits == mnist.y_test[:50]).mean() >= 0.9


def test_a_worker_with_the_cached_conversion_never_imports_tensorflow(trained_model_path, mnist):
    handler = KerasModelHandler(str(trained_model_path), sha256=sha256_file(trained_model_path))
    handler.load_model()  # converts, into this test's $DIGITFLOW_HOME
    worker = f"""
import json, sys
import numpy as np
from beam_jobs.keras_handler import KerasModelHandler
handler = KerasModelHandler({str(trained_model_path)!r}, sha256={handler.sha256!r})
images = np.array(json.loads(sys.stdin.read()), np.float32)
digits = handler.load_model().predict(images).argmax(axis=1).tolist()
print(json.dumps({{"digits": digits, "tensorflow": "tensorflow" in sys.modules}}))
"""
    images = model_input(mnist.x_test[:20])

    done = subprocess.run(
        [sys.executable, "-c", worker],
        input=json.dumps(images.tolist()),
        capture_output=True,
        text=True,
        env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"},
        check=True,
    )

    answer = json.loads(done.stdout)
    assert answer["tensorflow"] is False
    assert np.mean(np.array(answer["digits"]) == mnist.y_test[:20]) >= 0.9


@pytest.mark.slow  # converts with TensorFlow, in a `digitflow classify` of its own
def test_an_unwritable_model_cache_converts_for_the_run_only(model_file, mnist, tmp_path):
    (tmp_path / "a-file").write_text("DIGITFLOW_HOME lies under a regular file: mkdir fails")
    home, temp = tmp_path / "a-file" / "home", tmp_path / "temp"
    temp.mkdir()
    write_scans(mnist.x_test[:6], mnist.y_test[:6], tmp_path / "scans", seed=3)
    output = tmp_path / "out" / "results.csv"

    done = subprocess.run(
        [DIGITFLOW, "classify", tmp_path / "scans", "-o", output, "--model", model_file],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"DIGITFLOW_HOME": str(home), "TMPDIR": str(temp), "COLUMNS": "400"},
    )

    assert done.returncode == 0, done.stderr
    [warning] = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert f"model cache {home / 'cache' / 'models'} is not writable (Not a directory)" in warning
    assert warning.endswith("the conversion will not be reused")
    assert "Traceback" not in done.stderr
    assert not list(temp.glob("digitflow-litert-*"))  # the run's conversion is gone
    with output.open(newline="") as handle:
        rows = {Path(row["path"]).name: row for row in csv.DictReader(handle)}
    names = sorted(rows)
    scans = np.stack([to_mnist((tmp_path / "scans" / name).read_bytes()) for name in names])
    expected = load_model(model_file).predict_on_batch(scans)
    got = np.array([[float(rows[name][f"prob_{d}"]) for d in range(10)] for name in names])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [int(rows[name]["digit"]) for name in names] == list(expected.argmax(axis=1))
