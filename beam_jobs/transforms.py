"""The transforms of the bulk classification pipeline, each usable and testable on its own.

    ListImageFiles    a Source -> image file paths, plus (path, reason) for unreadable entries
    PreprocessImages  path -> (path, 28x28 float32 image), plus (path, reason) failures
    ClassifyImages    (path, image) -> results CSV line, through RunInference and one
                      `digitflow.results.Result`, which the line and the counters read
    FormatErrors      (path, reason) -> errors CSV line
    WriteCsv          CSV lines -> one file with a header, or N shards each with the header
    LogProgress       CSV lines -> a progress line in the log every few seconds, per worker

Paths travel as bytes (`os.fsencode`), so names that are not valid UTF-8 pass Beam's coders
intact; a result and the CSV files get them as `digitflow.listing.path_text` writes them.

Counters (namespace `digitflow.classify`): files_matched, files_ignored, images_classified,
images_failed, low_confidence; and for the drift check (beam_jobs.drift): predicted_0 ...
predicted_9, confidence_milli (the top probabilities' sum, in thousandths) and
drift_low_confidence (predictions below the drift threshold, the reference profile's).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    ModelHandler,
    PredictionResult,
    RunInference,
)
from apache_beam.pvalue import TaggedOutput

from beam_jobs.inputs import Source, read_input
from beam_jobs.outputs import file_prefix
from digitflow.listing import MAX_FILE_MIB, Kind, UnreadableError, path_text
from digitflow.preprocess import PreprocessError, to_mnist
from digitflow.results import Result, csv_line, error_line, result_line

log = logging.getLogger(__name__)

NAMESPACE = "digitflow.classify"
_files_matched = Metrics.counter(NAMESPACE, "files_matched")
_files_ignored = Metrics.counter(NAMESPACE, "files_ignored")
_images_classified = Metrics.counter(NAMESPACE, "images_classified")
_images_failed = Metrics.counter(NAMESPACE, "images_failed")
_low_confidence = Metrics.counter(NAMESPACE, "low_confidence")
PREDICTED = tuple(f"predicted_{digit}" for digit in range(10))
_predicted = [Metrics.counter(NAMESPACE, name) for name in PREDICTED]
_confidence_milli = Metrics.counter(NAMESPACE, "confidence_milli")
_drift_low_confidence = Metrics.counter(NAMESPACE, "drift_low_confidence")

# CSV lines per block on the way to the writer: one element per image would cost the runner's
# shuffle and the writing worker Python objects per line (~80 MB more peak RSS at 100k images).
LINES_PER_BLOCK = 256
FAILURES = "failures"
Image = tuple[bytes, np.ndarray]
Failure = tuple[bytes, str]


def _failed(path: bytes, reason: str) -> TaggedOutput:
    """A failure, counted where it arises: Flink runs the steps after the failures' flatten once
    per producer, and a counter there would keep only one producer's count."""
    _images_failed.inc()
    return TaggedOutput(FAILURES, (path, reason))


class _ListEntries(beam.DoFn):
    """Every entry of the source: image paths out, unreadable ones as failures, others counted."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def process(self, _: bytes):
        for entry in self.source.entries():
            _files_matched.inc()
            path = os.fsencode(entry.path)
            if entry.kind is Kind.IMAGE:
                yield path
            elif entry.kind is Kind.UNREADABLE:
                yield _failed(path, entry.reason)
            else:
                _files_ignored.inc()


class ListImageFiles(beam.PTransform):
    """A Source -> (image file paths, (path, reason) for each entry that cannot be read).

    One worker lists (as Beam's MatchFiles does); a reshuffle then spreads the files over all
    workers, or the whole job would run where the listing ran.
    """

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source

    def expand(
        self, pbegin: beam.pvalue.PBegin
    ) -> tuple[beam.PCollection[bytes], beam.PCollection[Failure]]:
        listing = beam.ParDo(_ListEntries(self.source)).with_output_types(bytes, failures=Failure)
        listed = (
            pbegin
            | "Start" >> beam.Impulse()
            | "List" >> listing.with_outputs(FAILURES, main="images")
        )
        return listed.images | "Spread" >> beam.Reshuffle(), listed[FAILURES]


class _Preprocess(beam.DoFn):
    """Read and preprocess one file; a file that is not a usable digit image is a failure."""

    def __init__(self, max_file_mib: int) -> None:
        self.max_file_mib = max_file_mib

    def process(self, path: bytes):
        try:
            yield path, to_mnist(read_input(path, self.max_file_mib))
        except (PreprocessError, UnreadableError) as error:
            yield _failed(path, str(error))
        except OSError as error:  # an object store's read
            reason = error.strerror or " ".join(str(error).split())[:200] or type(error).__name__
            yield _failed(path, f"unreadable: {reason}")


def _unexpected_failure(dead_letter: tuple[bytes, tuple[Any, ...]]) -> Failure:
    """A dead letter from `with_exception_handling` -> (path, reason); the traceback is logged."""
    path, (error_type, _, trace) = dead_letter
    _images_failed.inc()
    log.error("unexpected error on %s:\n%s", path_text(path), "".join(trace))
    return path, f"unreadable: unexpected {error_type.__name__}"


class PreprocessImages(beam.PTransform):
    """Path -> (images, failures): `(path, image)` and `(path, short human reason)`.

    Known failures (empty, unreadable, truncated, too large, blank) come from the core's
    preprocessing, or from the file's size: one over `max_file_mib` MiB is never read. Anything
    unexpected goes through Beam's dead-letter output instead of stopping the job.
    """

    def __init__(self, max_file_mib: int = MAX_FILE_MIB) -> None:
        super().__init__()
        self.max_file_mib = max_file_mib

    def expand(
        self, paths: beam.PCollection[bytes]
    ) -> tuple[beam.PCollection[Image], beam.PCollection[Failure]]:
        preprocess = _Preprocess(self.max_file_mib)
        to_mnist = beam.ParDo(preprocess).with_output_types(Image, failures=Failure)
        outputs = paths | "ToMnist" >> to_mnist.with_outputs(
            FAILURES, main="images"
        ).with_exception_handling(dead_letter_tag="unexpected")
        unexpected = outputs.unexpected | "Unexpected" >> beam.Map(_unexpected_failure)
        failures = (outputs[FAILURES], unexpected) | "AllFailures" >> beam.Flatten()
        return outputs.images, failures


def _result_line(
    element: tuple[bytes, PredictionResult],
    model_version: str,
    min_confidence: float,
    drift_threshold: float,
) -> str:
    """One image's result, counted, as its results row."""
    path, prediction = element
    result = Result.of(path_text(path), prediction.inference, model_version, min_confidence)
    _count(result, drift_threshold)
    return result_line(result)


def _count(result: Result, drift_threshold: float) -> None:
    """One result in the counters: the summary's and the drift check's."""
    _images_classified.inc()
    _predicted[result.digit].inc()
    _confidence_milli.inc(round(result.confidence * 1000))
    if result.low_confidence:
        _low_confidence.inc()
    if result.confidence < drift_threshold:
        _drift_low_confidence.inc()


class ClassifyImages(beam.PTransform):
    """(path, image) -> results CSV lines, batched through RunInference keyed by path.

    `drift_threshold` (default: `min_confidence`) is where the drift check's low-confidence
    count is cut: the reference profile's threshold.
    """

    def __init__(
        self,
        handler: ModelHandler,
        model_version: str,
        min_confidence: float,
        drift_threshold: float | None = None,
    ) -> None:
        super().__init__()
        self.handler = handler
        self.model_version = model_version
        self.min_confidence = min_confidence
        self.drift_threshold = min_confidence if drift_threshold is None else drift_threshold

    def expand(self, images: beam.PCollection[Image]) -> beam.PCollection[str]:
        line = beam.Map(_result_line, self.model_version, self.min_confidence, self.drift_threshold)
        return (
            images
            | "RunInference" >> RunInference(KeyedModelHandler(self.handler))
            | "ToCsv" >> line
        )


def _error_line(failure: Failure) -> str:
    path, reason = failure
    return error_line(path_text(path), reason)


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
        prefix, suffix = file_prefix(self.path, self.shards)
        return blocks | "Write" >> beam.io.WriteToText(
            prefix,
            file_name_suffix=suffix,
            num_shards=self.shards,
            shard_name_template="" if self.shards == 1 else None,
            header=header,
        )


class _LogProgress(beam.DoFn):
    """Counts rows in this worker; logs the count and rate every `every_s` seconds."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s

    def setup(self) -> None:
        self.rows = 0
        self.started = self.logged = 0.0

    def process(self, _: str):
        now = time.monotonic()
        if not self.rows:
            self.started = self.logged = now
        self.rows += 1
        if now - self.logged >= self.every_s:
            self.logged = now
            elapsed = now - self.started
            rate = f", {self.rows / elapsed:,.0f}/s" if elapsed else ""
            log.info("progress: %s images done by this worker%s", f"{self.rows:,}", rate)


class LogProgress(beam.PTransform):
    """Results and error lines -> a progress line every `every_s` seconds, per worker."""

    def __init__(self, every_s: float) -> None:
        super().__init__()
        self.every_s = every_s

    def expand(self, lines: beam.PCollection[str]) -> beam.PCollection[None]:
        return lines | "Count" >> beam.ParDo(_LogProgress(self.every_s))
