"""The transforms of the bulk classification pipeline, each usable and testable on its own.

    MatchImageFiles   file pattern -> ReadableFile of each image file (others counted, dropped)
    PreprocessImages  ReadableFile -> (path, 28x28 float32 image), plus (path, reason) failures
    ClassifyImages    (path, image) -> results CSV line, through RunInference
    FormatErrors      (path, reason) -> errors CSV line
    WriteCsv          CSV lines -> one file with a header, or N shards each with the header

Counters (namespace `digitflow.classify`): files_matched, files_ignored, images_classified,
images_failed, low_confidence.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes, FileMetadata
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference
from apache_beam.pvalue import TaggedOutput

from beam_jobs.csv_rows import csv_line, error_line, prediction_line
from digitflow.preprocess import IMAGE_EXTENSIONS, PreprocessError, to_mnist

log = logging.getLogger(__name__)

NAMESPACE = "digitflow.classify"
_files_matched = Metrics.counter(NAMESPACE, "files_matched")
_files_ignored = Metrics.counter(NAMESPACE, "files_ignored")
_images_classified = Metrics.counter(NAMESPACE, "images_classified")
_images_failed = Metrics.counter(NAMESPACE, "images_failed")
_low_confidence = Metrics.counter(NAMESPACE, "low_confidence")

# CSV lines per block on the way to the writer: one element per image would cost the runner's
# shuffle and the writing worker Python objects per line (~80 MB more peak RSS at 100k images).
LINES_PER_BLOCK = 256
Image = tuple[str, np.ndarray]
Failure = tuple[str, str]


def is_image_path(path: str) -> bool:
    """True for the image extensions the preprocessing reads, in any letter case."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _keep_image(metadata: FileMetadata) -> bool:
    _files_matched.inc()
    if is_image_path(metadata.path):
        return True
    _files_ignored.inc()
    return False


class MatchImageFiles(beam.PTransform):
    """All files matching a pattern (local, gs://, s3://, ...), kept if they are images.

    A reshuffle after matching spreads the files over all workers: the match itself is one
    element, and without it the whole job would run where the listing ran.
    """

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = pattern

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[fileio.ReadableFile]:
        return (
            pbegin
            | "Match" >> fileio.MatchFiles(self.pattern, fileio.EmptyMatchTreatment.DISALLOW)
            | "KeepImages" >> beam.Filter(_keep_image)
            | "Spread" >> beam.Reshuffle()
            | "Open" >> fileio.ReadMatches(compression=CompressionTypes.UNCOMPRESSED)
        )


class _Preprocess(beam.DoFn):
    """Read and preprocess one file; a file that is not a usable digit image is a failure."""

    def process(self, file: fileio.ReadableFile):
        path = file.metadata.path
        try:
            yield path, to_mnist(file.read())
        except PreprocessError as error:
            yield TaggedOutput(PreprocessImages.FAILURES, (path, str(error)))
        except OSError as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            yield TaggedOutput(PreprocessImages.FAILURES, (path, f"unreadable: {reason}"))


def _unexpected_failure(dead_letter: tuple[fileio.ReadableFile, tuple[Any, ...]]) -> Failure:
    """A dead letter from `with_exception_handling` -> (path, reason); the traceback is logged."""
    file, (error_type, _, trace) = dead_letter
    log.error("unexpected error on %s:\n%s", file.metadata.path, "".join(trace))
    return file.metadata.path, f"unreadable: unexpected {error_type.__name__}"


class PreprocessImages(beam.PTransform):
    """ReadableFile -> (images, failures): `(path, image)` and `(path, short human reason)`.

    Known failures (empty, unreadable, truncated, too large, blank) come from the core's
    preprocessing; anything unexpected goes through Beam's dead-letter output instead of
    stopping the job.
    """

    FAILURES = "failures"

    def expand(
        self, files: beam.PCollection[fileio.ReadableFile]
    ) -> tuple[beam.PCollection[Image], beam.PCollection[Failure]]:
        to_mnist = beam.ParDo(_Preprocess()).with_output_types(Image, failures=Failure)
        outputs = files | "ToMnist" >> to_mnist.with_outputs(
            self.FAILURES, main="images"
        ).with_exception_handling(dead_letter_tag="unexpected")
        unexpected = outputs.unexpected | "Unexpected" >> beam.Map(_unexpected_failure)
        failures = (outputs[self.FAILURES], unexpected) | "AllFailures" >> beam.Flatten()
        return outputs.images, failures


def _prediction_line(element: tuple[str, Any], model_version: str, min_confidence: float) -> str:
    path, result = element
    line = prediction_line(path, result.inference, model_version, min_confidence)
    _images_classified.inc()
    if result.inference.max() < min_confidence:
        _low_confidence.inc()
    return line


class ClassifyImages(beam.PTransform):
    """(path, image) -> results CSV lines, batched through RunInference keyed by path."""

    def __init__(self, handler: ModelHandler, model_version: str, min_confidence: float) -> None:
        super().__init__()
        self.handler = handler
        self.model_version = model_version
        self.min_confidence = min_confidence

    def expand(self, images: beam.PCollection[Image]) -> beam.PCollection[str]:
        return (
            images
            | "RunInference" >> RunInference(KeyedModelHandler(self.handler))
            | "ToCsv" >> beam.Map(_prediction_line, self.model_version, self.min_confidence)
        )


def _error_line(failure: Failure) -> str:
    _images_failed.inc()
    return error_line(*failure)


class FormatErrors(beam.PTransform):
    """(path, reason) -> errors CSV lines."""

    def expand(self, failures: beam.PCollection[Failure]) -> beam.PCollection[str]:
        return failures | "ToCsv" >> beam.Map(_error_line)


class WriteCsv(beam.PTransform):
    """CSV lines -> `path` with a header line; with `shards` > 1, `stem-0000i-of-0000N.csv`.

    Lines travel to the writer in blocks (a block is written as its lines); their order in
    the file is arbitrary, as in any Beam output.
    """

    def __init__(self, path: str, columns: tuple[str, ...], shards: int = 1) -> None:
        super().__init__()
        self.path = path
        self.columns = columns
        self.shards = shards

    def expand(self, lines: beam.PCollection[str]) -> beam.pvalue.PDone:
        header = csv_line(self.columns)
        blocks = (
            lines
            | "Block"
            >> beam.BatchElements(min_batch_size=LINES_PER_BLOCK, max_batch_size=LINES_PER_BLOCK)
            | "Join" >> beam.Map("\n".join)
        )
        if self.shards == 1:
            return blocks | "Write" >> beam.io.WriteToText(
                self.path, num_shards=1, shard_name_template="", header=header
            )
        stem, suffix = os.path.splitext(self.path)
        return blocks | "Write" >> beam.io.WriteToText(
            stem, file_name_suffix=suffix, num_shards=self.shards, header=header
        )


def sharded_paths(path: str, shards: int) -> str:
    """The glob of the files WriteCsv writes for `path` and `shards`."""
    if shards == 1:
        return path
    stem, suffix = os.path.splitext(path)
    return f"{stem}-*-of-{shards:05d}{suffix}"
