"""A RunInference ModelHandler for Keras 3 `.keras` files, on any file system Beam can read.

Beam's own TensorFlow handler needs tensorflow_hub and Keras 2 style saved models; this one takes
a `.keras` archive, pinned by `model_store.storage.fetch_file` to a local file (fetched into the
model cache once per machine, verified against its sha256 on every load), and runs it through
LiteRT's CPU interpreter (XNNPACK), which needs 0.6x TensorFlow's CPU per image for our CNN
(benchmarks/RESULTS.md). The LiteRT flatbuffer is converted from the verified `.keras` file once
per machine (Keras' `export(format="litert")`, in its safe-mode load) and cached in the model
cache as `<keras sha256>-<flatbuffer sha256>.tflite`, checked on every load; a worker that
finds it there never imports TensorFlow. When the cache cannot be written (a read-only
DIGITFLOW_HOME), each load converts into a temporary folder, removed once the interpreter has
read it, and logs one warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from digitflow import locations
from digitflow.locations import ChecksumMismatch, sha256_file, verified_file
from digitflow.terminal import quiet_native_output
from model_store.object_storage import model_cache
from model_store.storage import fetch_file

# sha256_file: how callers compute the `sha256` a handler pins its model file to.
__all__ = ["KerasModelHandler", "LiteModel", "ModelFileError", "sha256_file"]

log = logging.getLogger(__name__)


class ModelFileError(RuntimeError):
    """The model file is missing or is not the one resolved at launch."""


class LiteModel:
    """A LiteRT model file on CPU: float32 (n, 28, 28) images in, (n, 10) probabilities out.

    One interpreter per worker process, shared by its threads: calls take turns.
    """

    def __init__(self, path: Path, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        with quiet_native_output():  # LiteRT's XNNPACK notice, at the first allocation
            threads = threads or os.cpu_count()
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.batch_shape: tuple[int, ...] = ()
        self.lock = threading.Lock()

    def predict(self, images: np.ndarray) -> np.ndarray:
        with self.lock:
            if images.shape != self.batch_shape:  # the interpreter's tensors are sized per batch
                self.interpreter.resize_tensor_input(self.input, images.shape, strict=False)
                self.interpreter.allocate_tensors()
                self.batch_shape = images.shape
            self.interpreter.set_tensor(self.input, images)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self.output)


class KerasModelHandler(ModelHandler[np.ndarray, PredictionResult, LiteModel]):
    """Float32 (28, 28) images in, PredictionResult(image, 10 probabilities) out.

    `model_uri` is a local path or a URI (gs://, s3://, ...); `sha256`, when given, must match
    the file's content, so every worker runs exactly the model that was resolved at launch.
    `threads` caps the interpreter's threads per worker (default: one per core).
    """

    def __init__(
        self,
        model_uri: str,
        *,
        sha256: str | None = None,
        batch_size: int = 256,
        threads: int | None = None,
    ) -> None:
        # TensorFlow (when converting) and LiteRT log their start-up on stderr unless told not to.
        env_vars = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size, env_vars=env_vars)
        self.model_uri = model_uri
        self.sha256 = sha256
        self.threads = threads

    def load_model(self) -> LiteModel:
        """Fetch (if remote, once per machine), verify, convert (once) and load the model."""
        try:
            path = fetch_file(self.model_uri, self.sha256)
        except FileNotFoundError:
            raise ModelFileError(f"model file not found: {self.model_uri}") from None
        except ChecksumMismatch:
            raise ModelFileError(
                f"model file {self.model_uri} changed since the job started (sha256 differs); "
                "refusing to classify with a different model"
            ) from None
        with litert_file(path, self.sha256 or sha256_file(path)) as flatbuffer:
            return LiteModel(flatbuffer, self.threads)

    def run_inference(
        self,
        batch: Sequence[np.ndarray],
        model: LiteModel,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        """One interpreter call over the stacked batch."""
        probabilities = model.predict(np.stack(batch))
        return [PredictionResult(x, p) for x, p in zip(batch, probabilities, strict=True)]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        """Bytes of image data in a batch (the default pickles the batch to find out)."""
        return sum(x.nbytes for x in batch)

    def get_metrics_namespace(self) -> str:
        """RunInference's own counters (inferences, batch latency, model load) go here."""
        return "digitflow.inference"


@contextlib.contextmanager
def litert_file(keras_path: Path, sha256: str) -> Iterator[Path]:
    """The LiteRT flatbuffer of the verified `.keras` file whose content has `sha256`, for the
    block (the interpreter reads it when it is built).

    Reused from the model cache when a copy there still matches the digest in its name;
    otherwise converted with Keras (importing TensorFlow) and cached in one atomic replace, or,
    when the cache cannot be written, into a temporary folder removed after the block.
    """
    cache = model_cache()
    cached = _cached(cache, sha256)
    reason = None if cached else _unwritable(cache)
    if reason is None:
        yield cached or _convert(keras_path, sha256, cache)
        return
    log.warning(
        "model cache %s is not writable (%s): converting the model to LiteRT for this run only, "
        "the conversion will not be reused",
        cache,
        reason,
    )
    with tempfile.TemporaryDirectory(prefix="digitflow-litert-") as folder:
        yield _convert(keras_path, sha256, Path(folder))


def _cached(cache: Path, sha256: str) -> Path | None:
    """A conversion of the `.keras` file with `sha256` in `cache` that still matches the digest
    in its name, if there is one."""
    for cached in sorted(cache.glob(f"{sha256}-*.tflite")):
        with contextlib.suppress(FileNotFoundError, ChecksumMismatch):
            return verified_file(cached, cached.stem.removeprefix(f"{sha256}-"))
    return None


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be created in `folder` (made if missing), or None when they can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as error:
        return error.strerror or type(error).__name__


def _convert(keras_path: Path, sha256: str, folder: Path) -> Path:
    """Convert the `.keras` file to `<sha256>-<flatbuffer sha256>.tflite` in `folder`, with Keras
    (importing TensorFlow), in one atomic replace."""
    from digitflow.models import load_model

    with locations.temporary(folder / sha256, ".tflite") as tmp:  # Keras insists on the suffix
        load_model(keras_path).export(str(tmp), format="litert", verbose=False)
        converted = folder / f"{sha256}-{sha256_file(tmp)}.tflite"
        locations.commit(tmp, converted)
    return converted
