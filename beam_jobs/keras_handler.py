"""A RunInference ModelHandler for Keras 3 `.keras` files, on any file system Beam can read.

Beam's own TensorFlow handler needs tensorflow_hub and Keras 2 style saved models; this one loads
a `.keras` archive in Keras' safe mode, verified against its sha256, once per worker process.
TensorFlow is imported only when a worker loads the model, never when the module is imported.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from model_store.storage import sha256_file

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class ModelFileError(RuntimeError):
    """The model file is missing or is not the one resolved at launch."""


class KerasModelHandler(ModelHandler[np.ndarray, PredictionResult, "keras.Model"]):
    """Float32 (28, 28) images in, PredictionResult(image, 10 probabilities) out.

    `model_uri` is a local path or a URI (gs://, s3://, ...); `sha256`, when given, must match
    the file's content, so every worker runs exactly the model that was resolved at launch.
    `intra_op_threads` caps TensorFlow's threads per worker (set before TensorFlow starts).
    """

    def __init__(
        self,
        model_uri: str,
        *,
        sha256: str | None = None,
        batch_size: int = 256,
        intra_op_threads: int | None = None,
    ) -> None:
        env_vars = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
        if intra_op_threads:
            env_vars["TF_NUM_INTRAOP_THREADS"] = str(intra_op_threads)
            env_vars["TF_NUM_INTEROP_THREADS"] = "1"
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size, env_vars=env_vars)
        self.model_uri = model_uri
        self.sha256 = sha256

    def load_model(self) -> keras.Model:
        """Fetch (if remote), verify and load the model in Keras' safe mode."""
        from digitflow.models import load_model

        local = Path(self.model_uri)
        if FileSystems.get_scheme(self.model_uri) is None and local.is_file():
            _verify(local, self.sha256, self.model_uri)
            return load_model(local)
        with tempfile.TemporaryDirectory(prefix="digitflow-model-") as tmp:
            copy = Path(tmp) / "model.keras"
            _download(self.model_uri, copy)
            _verify(copy, self.sha256, self.model_uri)
            return load_model(copy)

    def run_inference(
        self,
        batch: Sequence[np.ndarray],
        model: keras.Model,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        """One compiled forward pass over the stacked batch."""
        probabilities = model.predict_on_batch(np.stack(batch))
        return [PredictionResult(x, p) for x, p in zip(batch, probabilities, strict=True)]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        """Bytes of image data in a batch (the default pickles the batch to find out)."""
        return sum(x.nbytes for x in batch)

    def get_metrics_namespace(self) -> str:
        """RunInference's own counters (inferences, batch latency, model load) go here."""
        return "digitflow.inference"


def _download(uri: str, target: Path) -> None:
    if not FileSystems.exists(uri):
        raise ModelFileError(f"model file not found: {uri}")
    log.info("downloading model %s", uri)
    compression = CompressionTypes.UNCOMPRESSED
    with FileSystems.open(uri, compression_type=compression) as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)


def _verify(path: Path, sha256: str | None, uri: str) -> None:
    if sha256 is not None and sha256_file(path) != sha256:
        raise ModelFileError(
            f"model file {uri} changed since the job started (sha256 differs); "
            "refusing to classify with a different model"
        )
