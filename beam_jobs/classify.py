"""Bulk classification: a folder, glob or object-store prefix of digit scans -> CSV.

In the style of Beam's `examples/inference`: `build_pipeline` is the graph alone (list, preprocess,
RunInference, write the CSV files, log progress), which a TestPipeline can drive; `run(argv)` is
the launch: it parses this job's options and hands every other option to Beam, so the same code
runs on the DirectRunner, Dataflow, Flink or Spark:

    python -m beam_jobs.classify --input scans/ --output out/results.csv \
        [--model production|7|v7|PATH.keras] [--store URI] [--shards N] [--overwrite] \
        [--min_confidence 0.8] [--batch_size 256] [--progress_s 10] \
        [--drift_psi 0.25] [--drift_low_confidence_ratio 3] [--drift_min_images 100] \
        [--max_file_mib 64] \
        [--runner ... and other Beam options]

At launch, before anything runs: the model is resolved to one immutable file (a store version's
`versions/<n>/model.keras` and its sha256), which every worker loads and verifies and whose
version is written on every row, whatever happens to the `production` alias meanwhile; the
output is checked (beam_jobs.outputs); the input is listed once, to refuse an input without image
files and to size the job (and, on the DirectRunner, choose its mode: beam_jobs.direct). The
pipeline lists it again on a worker. At the end, the run's predictions are compared with the
model's reference profile (beam_jobs.drift) and the verdict is part of the summary.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import ModelHandler
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult, PipelineState

from beam_jobs.csv_rows import COLUMNS, ERROR_COLUMNS, errors_path
from beam_jobs.direct import describe_runner, direct_defaults, inference_threads, is_direct
from beam_jobs.drift import Drift, compare, reference_profile
from beam_jobs.inputs import Source
from beam_jobs.keras_handler import KerasModelHandler
from beam_jobs.options import ClassifyOptions, add_arguments, bounded, to_argv
from beam_jobs.outputs import refusal, remove_temp_folders, sharded_paths, temp_folders
from beam_jobs.transforms import (
    NAMESPACE,
    PREDICTED,
    ClassifyImages,
    FormatErrors,
    ListImageFiles,
    LogProgress,
    PreprocessImages,
    WriteCsv,
)
from digitflow.config import LOW_CONFIDENCE
from digitflow.evaluate import PredictionProfile
from digitflow.listing import IMAGE_EXTENSIONS, MAX_FILE_MIB, Kind
from digitflow.terminal import worker_output_held
from model_store import ModelStore, ResolvedModel, StoreError
from model_store.refs import label

log = logging.getLogger(__name__)

# CPU time per image by batch size (the first round's CNN, earlier host): 0.64 ms at 8, 0.48 at
# 64, 0.46 at 256, 0.42 at 1,024. From 256 on, larger batches save little and hold more images.
DEFAULT_BATCH_SIZE = 256
PROGRESS_EVERY_S = 10.0


class ClassifyError(Exception):
    """The job cannot start: no input files, no model, a refused output... `str()` says why."""


@dataclass(frozen=True)
class ClassifySummary:
    """What a finished job did, from its Beam counters."""

    input: str
    results: str
    errors: str
    model_version: str
    model_uri: str
    matched: int
    classified: int
    failed: int
    ignored: int
    low_confidence: int
    elapsed_s: float
    drift: Drift

    @property
    def images(self) -> int:
        """Image files processed: each is in the results or in the errors file."""
        return self.classified + self.failed

    @property
    def images_per_s(self) -> float:
        return self.images / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "images": self.images, "images_per_s": self.images_per_s}

    def report(self) -> str:
        """The human summary printed at the end of a run."""
        return (
            f"matched {self.matched:,} files: {self.images:,} images, {self.ignored:,} ignored\n"
            f"classified {self.classified:,} ({self.low_confidence:,} low confidence), "
            f"errors {self.failed:,}\n"
            f"elapsed {self.elapsed_s:.1f} s, {self.images_per_s:,.0f} images/s\n"
            f"model {self.model_version} ({self.model_uri})\n"
            f"{self.drift.line()}\n"
            f"results: {self.results}\nerrors:  {self.errors}"
        )


def parse_known_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """This job's options; everything else is left for Beam's PipelineOptions."""
    parser = argparse.ArgumentParser(
        prog="beam_jobs.classify",
        description=__doc__.split("\n")[0],
        allow_abbrev=False,  # never take a Beam option for an abbreviation of ours
    )
    add_arguments(parser, ClassifyOptions)
    parser.add_argument(
        "--batch_size",
        type=bounded(int, 1, None),
        default=DEFAULT_BATCH_SIZE,
        help="Images per predict.",
    )
    parser.add_argument(
        "--progress_s",
        type=float,
        default=PROGRESS_EVERY_S,
        help="Seconds between progress lines in the log, per worker.",
    )
    return parser.parse_known_args(argv)


def job_args(options: ClassifyOptions, beam_args: Sequence[str] = ()) -> list[str]:
    """`run`'s argv for these options, Beam's options last."""
    return [*to_argv(options), *beam_args]


def run(argv: list[str] | None = None) -> ClassifySummary:
    """Check, launch the job, wait for it, and return its summary.

    Raises ClassifyError when it cannot start; a failed job raises the runner's error, after
    removing the temp folders it created.
    """
    start = time.monotonic()
    known, beam_args = parse_known_args(argv)
    options = PipelineOptions(beam_args)
    FileSystems.set_options(options)  # credentials and regions for gs:// s3:// at launch too
    model = resolve_model(known.model, known.store)
    source = Source.parse(known.input)
    check_output(known.output, known.shards, source, known.overwrite)
    found = survey(source)
    if is_direct(options):
        images = found[Kind.IMAGE] + found[Kind.UNREADABLE]
        options = PipelineOptions(beam_args + direct_defaults(options, beam_args, images))
    version = model_label(model)
    reference = reference_profile(model.card)
    drift_threshold = reference.threshold if reference else known.min_confidence
    log.info("%s", start_line(known.input, found, version, options))
    handler = KerasModelHandler(
        model.uri,
        sha256=model.sha256,
        batch_size=known.batch_size,
        threads=inference_threads(options),
    )

    pipeline = beam.Pipeline(options=options)
    build_pipeline(
        pipeline,
        source,
        known.output,
        handler,
        version,
        min_confidence=known.min_confidence,
        shards=known.shards,
        progress_s=known.progress_s,
        drift_threshold=drift_threshold,
        max_file_mib=known.max_file_mib,
    )
    counters = _run_cleaning_up(pipeline, known.output, known.shards)
    return ClassifySummary(
        input=known.input,
        results=sharded_paths(known.output, known.shards),
        errors=errors_path(known.output),
        model_version=version,
        model_uri=model.uri,
        matched=counters.get("files_matched", 0),
        classified=counters.get("images_classified", 0),
        failed=counters.get("images_failed", 0),
        ignored=counters.get("files_ignored", 0),
        low_confidence=counters.get("low_confidence", 0),
        elapsed_s=time.monotonic() - start,
        drift=compare(
            run_profile(counters, drift_threshold),
            reference,
            max_psi=known.drift_psi,
            max_low_confidence_ratio=known.drift_low_confidence_ratio,
            min_images=known.drift_min_images,
        ),
    )


def build_pipeline(
    pipeline: beam.Pipeline,
    source: Source,
    output: str,
    handler: ModelHandler,
    model_version: str,
    *,
    min_confidence: float = LOW_CONFIDENCE,
    shards: int = 1,
    progress_s: float = PROGRESS_EVERY_S,
    drift_threshold: float | None = None,
    max_file_mib: int = MAX_FILE_MIB,
) -> tuple[beam.PCollection[str], beam.PCollection[str]]:
    """The job's graph on `pipeline`: every image under `source` classified by `handler` into
    `output` (with `model_version` on each row), failures into its errors file, progress logged.
    Predictions below `drift_threshold` (default `min_confidence`) count as low-confidence for
    the drift check; files over `max_file_mib` MiB are failures, never read.

    Returns the results and the errors CSV lines, as written (no header).
    """
    paths, unreadable = pipeline | "ListInput" >> ListImageFiles(source)
    images, bad_images = paths | "Preprocess" >> PreprocessImages(max_file_mib)
    classify = ClassifyImages(handler, model_version, min_confidence, drift_threshold)
    results = images | "Classify" >> classify
    failures = (unreadable, bad_images) | "AllFailures" >> beam.Flatten()
    error_lines = failures | "FormatErrors" >> FormatErrors()
    _ = results | "WriteResults" >> WriteCsv(output, COLUMNS, shards)
    _ = error_lines | "WriteErrors" >> WriteCsv(errors_path(output), ERROR_COLUMNS)
    _ = (results, error_lines) | "AllRows" >> beam.Flatten() | LogProgress(progress_s)
    return results, error_lines


def check_output(output: str, shards: int, source: Source, overwrite: bool) -> None:
    """ClassifyError when the job must not write to `output` (see beam_jobs.outputs)."""
    try:
        refused = refusal(output, shards, source, overwrite)
    except OSError as error:  # Beam's BeamIOError: a bucket that is not there, no access, ...
        raise ClassifyError(f"cannot check --output {output}: {error}") from None
    if refused:
        raise ClassifyError(refused)


def survey(source: Source) -> Counter[Kind]:
    """How many entries of each kind the input has; ClassifyError for none, or no images."""
    try:
        found = Counter(entry.kind for entry in source.entries())
    except OSError as error:  # Beam's BeamIOError: a bucket that is not there, no access, ...
        raise ClassifyError(f"cannot list {source.given}: {error}") from None
    if not found:
        raise ClassifyError(f"no files match {source.given}")
    if not found[Kind.IMAGE] + found[Kind.UNREADABLE]:
        kinds = ", ".join(sorted(extension[1:] for extension in IMAGE_EXTENSIONS))
        raise ClassifyError(
            f"no image files in {source.given}: {found.total():,} files, none named {kinds}"
        )
    return found


def resolve_model(ref: str, store: str | None) -> ResolvedModel:
    """Pin `ref` (alias, version or `.keras` path) to one verified model file and its sha256."""
    try:
        model_store = ModelStore(store)
    except StoreError as error:
        raise ClassifyError(f"--store: {error}") from None
    try:
        return model_store.resolve(ref)
    except StoreError as error:
        raise ClassifyError(
            f"no model for --model {ref}: {error} (promote a version, or pass --model PATH.keras)"
        ) from None


def model_label(model: ResolvedModel) -> str:
    """Written on every row: `v7`, or `sha256:<12 hex>` for a file outside the store."""
    if model.version is None:
        return f"sha256:{model.sha256[:12]}"
    return label(model.version)


def run_profile(counters: dict[str, int], threshold: float) -> PredictionProfile:
    """The run's predictions, from its counters, with low confidence cut at `threshold`."""
    return PredictionProfile.from_counts(
        [counters.get(name, 0) for name in PREDICTED],
        counters.get("confidence_milli", 0) / 1000,
        counters.get("drift_low_confidence", 0),
        threshold,
    )


def start_line(
    source: str, found: Counter[Kind], model_version: str, options: PipelineOptions
) -> str:
    """What the job is about to do: files matched, the model, the runner and its mode."""
    return (
        f"classifying {source}: {found.total():,} files matched ({found[Kind.IMAGE]:,} images, "
        f"{found[Kind.UNREADABLE]:,} unreadable, {found[Kind.OTHER]:,} ignored); "
        f"model {model_version}; runner {describe_runner(options)}"
    )


def _run_cleaning_up(pipeline: beam.Pipeline, output: str, shards: int) -> dict[str, int]:
    """Run the pipeline to its end and return its counters; if it fails, remove the temp
    folders it created next to the output (and only those) before raising."""
    before = temp_folders(output, shards)
    try:
        with worker_output_held("beam_jobs"):
            result = pipeline.run()
            state = result.wait_until_finish()
        if state != PipelineState.DONE:
            raise RuntimeError(f"the job ended in state {state}")
    except BaseException:
        remove_temp_folders(temp_folders(output, shards) - before)
        raise
    return _counters(result)


def _counters(result: PipelineResult) -> dict[str, int]:
    """This job's counters by name, summed over steps.

    Committed values, else attempted ones: some runners report only those.
    """
    totals: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    for counter in query["counters"]:
        name = counter.key.metric.name
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[name] = totals.get(name, 0) + (value or 0)
    return totals


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    try:
        print(run().report())
    except ClassifyError as error:
        raise SystemExit(f"error: {error}") from None
