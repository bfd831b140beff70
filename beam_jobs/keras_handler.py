"""A RunInference ModelHandler for Keras 3 `.keras` files, on any file system Beam can read.

Beam's own TensorFlow handler needs tensorflow_hub and Keras 2 style saved models; this one loads
a `.keras` archive in Keras' safe mode, once per worker process, from the local file that
`model_store.storage.fetch_file` pins it to (fetched into the model cache once per machine,
verified against its sha256 on every load). TensorFlow is imported only when a worker loads
the model, never when the module is imported.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from model_store.files import ChecksumMismatch, sha256_file
from model_store.storage import fetch_file

if TYPE_CHECKING:
    import keras

# sha256_file: how callers compute the `sha256` a handler pins its model file to.
__all__ = ["KerasModelHandler", "ModelFileError", "sha256_file"]


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
        """Fetch (if remote, once per machine), verify and load the model in Keras' safe mode."""
        from digitflow.models import load_model

        try:
            path = fetch_file(self.model_uri, self.sha256)
        except FileNotFoundError:
            raise ModelFileError(f"model file not found: {self.model_uri}") from None
        except ChecksumMismatch:
            raise ModelFileError(
                f"model file {self.model_uri} changed since the job started (sha256 differs); "
                "refusing to classify with a different model"
            ) from None
        return load_model(path)

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
