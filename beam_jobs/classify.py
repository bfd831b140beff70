"""Bulk classification: a folder, glob or object-store prefix of digit scans -> CSV.

In the style of Beam's `examples/inference`: `build_pipeline` is the graph alone (list, preprocess,
RunInference, write the CSV files, log progress), which a TestPipeline can drive; `run(options,
beam_args)` is the launch, with this job's options (`beam_jobs.options.ClassifyOptions`) and
Beam's, so the same code runs on the DirectRunner, Dataflow, Flink or Spark; `main(argv)` parses
a command line into the two:

    python -m beam_jobs.classify --input scans/ --output out/results.csv \
        [--model production|7|v7|PATH.keras] [--store URI] [--shards N] [--overwrite] \
        [--min_confidence 0.8] [--batch_size 256] [--progress_s 10] \
        [--drift_psi 0.25] [--drift_low_confidence_ratio 3] [--drift_min_images 100] \
        [--max_file_mib 64] \
        [--runner ... and other Beam options]

The job's tuning (`--batch_size`, `--progress_s`: `beam_jobs.options.Tuning`) is parsed with
Beam's options (`TuningOptions`), so it travels among them, e.g. after `digitflow classify`'s.

At launch, before anything runs: the model is resolved to one immutable file (a store version's
`versions/<n>/model.keras` and its sha256), which every worker loads and verifies and whose
version is written on every row, whatever happens to the `production` alias meanwhile; the
output is checked (beam_jobs.outputs); the input is listed once, to refuse an input without image
files and to size the job (and, on the DirectRunner, choose its mode: beam_jobs.direct). The
pipeline lists it again, on a worker: handing it the launch's listing (a `Create`) would carry
every path in the job's graph, which Dataflow caps in size; a listing of 10,000 local files
takes about 50 ms. At the end, the run's predictions are compared with the model's reference
profile (beam_jobs.drift) and the verdict is part of the summary.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import ModelHandler
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult, PipelineState

from beam_jobs.direct import describe_runner, direct_defaults, inference_threads, is_direct
from beam_jobs.drift import Drift, compare, reference_profile
from beam_jobs.inputs import Source
from beam_jobs.keras_handler import KerasModelHandler
from beam_jobs.options import ClassifyOptions, Tuning
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
from digitflow.options import add_arguments, flags, from_namespace, spec
from digitflow.results import COLUMNS, ERROR_COLUMNS, errors_path
from digitflow.terminal import worker_output_held
from model_store import ModelStore, ResolvedModel, StoreError
from model_store.refs import label

log = logging.getLogger(__name__)


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


class TuningOptions(PipelineOptions):
    """`beam_jobs.options.Tuning` as Beam options: `options.view_as(TuningOptions)`."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        add_arguments(parser, Tuning)


def main(argv: list[str] | None = None) -> ClassifySummary:
    """`python -m beam_jobs.classify ARGS`: this job's options from `argv`, every other one
    left for Beam; then `run`."""
    tuning = "; ".join(
        f"{flags(item)[0]} (default {item.default:g}): {spec(item).help.rstrip('.')}"
        for item in fields(Tuning)
    )
    parser = argparse.ArgumentParser(
        prog="beam_jobs.classify",
        description=__doc__.split("\n")[0],
        epilog=f"Every other option goes to Beam, this job's tuning among them: {tuning}",
        allow_abbrev=False,  # never take a Beam option for an abbreviation of ours
    )
    add_arguments(parser, ClassifyOptions)
    known, beam_args = parser.parse_known_args(argv)
    return run(from_namespace(ClassifyOptions, known), beam_args)


def run(options: ClassifyOptions, beam_args: Sequence[str] = ()) -> ClassifySummary:
    """Check, launch the job with Beam's options `beam_args`, wait for it, and return its summary.

    Raises ClassifyError when it cannot start; a failed job raises the runner's error, after
    removing the temp folders it created.
    """
    start = time.monotonic()
    beam_args = list(beam_args)
    beam_options = PipelineOptions(beam_args)
    FileSystems.set_options(beam_options)  # credentials and regions for gs:// s3:// at launch too
    tuning = from_namespace(Tuning, beam_options.view_as(TuningOptions))
    model = resolve_model(options.model, options.store)
    source = Source.parse(options.source)
    check_output(options.output, options.shards, source, options.overwrite)
    found = survey(source)
    if is_direct(beam_options):
        images = found[Kind.IMAGE] + found[Kind.UNREADABLE]
        beam_options = PipelineOptions(beam_args + direct_defaults(beam_options, beam_args, images))
    version = model_label(model)
    reference = reference_profile(model.card)
    drift_threshold = reference.threshold if reference else options.min_confidence
    log.info("%s", start_line(options.source, found, version, beam_options))
    handler = KerasModelHandler(
        model.uri,
        sha256=model.sha256,
        batch_size=tuning.batch_size,
        threads=inference_threads(beam_options),
    )

    pipeline = beam.Pipeline(options=beam_options)
    build_pipeline(
        pipeline,
        source,
        options.output,
        handler,
        version,
        min_confidence=options.min_confidence,
        shards=options.shards,
        progress_s=tuning.progress_s,
        drift_threshold=drift_threshold,
        max_file_mib=options.max_file_mib,
    )
    counters = _run_cleaning_up(pipeline, options.output, options.shards)
    return ClassifySummary(
        input=options.source,
        results=sharded_paths(options.output, options.shards),
        errors=errors_path(options.output),
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
            max_psi=options.drift_psi,
            max_low_confidence_ratio=options.drift_low_confidence_ratio,
            min_images=options.drift_min_images,
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
    progress_s: float = Tuning.progress_s,
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
        print(main().report())
    except ClassifyError as error:
        raise SystemExit(f"error: {error}") from None
