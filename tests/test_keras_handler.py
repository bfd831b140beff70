"""The bulk job's model handler: a real saved .keras model, converted to LiteRT and run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from beam_jobs.keras_handler import KerasModelHandler, sha256_file
from digitflow.data import model_input
from digitflow.models import load_model
from model_store.object_storage import model_cache


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
