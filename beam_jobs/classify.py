"""Bulk classification: a folder, glob or object-store prefix of digit scans -> CSV.

In the style of Beam's `examples/inference`: `run(argv)` parses this job's options and hands
every other option to Beam, so the same code runs on the DirectRunner, Dataflow, Flink or Spark:

    python -m beam_jobs.classify --input scans/ --output out/results.csv \
        [--model production|7|v7|PATH.keras] [--store URI] [--shards N] [--overwrite] \
        [--min_confidence 0.8] [--batch_size 256] [--progress_s 10] \
        [--runner ... and other Beam options]

At launch, before anything runs: the model is resolved to one immutable file (a store version's
`versions/<n>/model.keras` and its sha256), which every worker loads and verifies and whose
version is written on every row, whatever happens to the `production` alias meanwhile; the
output is checked (beam_jobs.outputs); the input is listed once, to refuse an input without image
files and to size the job. The pipeline lists it again on a worker.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult, PipelineState

from beam_jobs.csv_rows import COLUMNS, DEFAULT_MIN_CONFIDENCE, ERROR_COLUMNS, errors_path
from beam_jobs.inputs import Source
from beam_jobs.keras_handler import KerasModelHandler
from beam_jobs.outputs import refusal, remove_temp_folders, sharded_paths, temp_folders
from beam_jobs.transforms import (
    NAMESPACE,
    ClassifyImages,
    FormatErrors,
    ListImageFiles,
    LogProgress,
    PreprocessImages,
    WriteCsv,
)
from digitflow.listing import Kind
from digitflow.preprocess import IMAGE_EXTENSIONS
from model_store import ModelStore, StoreError
from model_store.storage import sha256_file

log = logging.getLogger(__name__)

# The CNN's CPU time per image, measured by batch size: 0.64 ms at 8, 0.48 at 64, 0.46 at 256,
# 0.42 at 1,024. From 256 on, larger batches save little and hold more images per worker.
DEFAULT_BATCH_SIZE = 256
# The DirectRunner's default mode: in-process below this many files, a process per core from
# it (see direct_defaults).
MULTI_PROCESS_FROM = 5_000
PROGRESS_EVERY_S = 10.0
_DIRECT_RUNNERS = {"direct", "switchingdirect", "fnapi"}


class ClassifyError(Exception):
    """The job cannot start: no input files, no model, a refused output... `str()` says why."""


@dataclass(frozen=True)
class LaunchModel:
    """The one model file every worker uses, pinned at launch."""

    label: str  # written on every row: `v7`, or `sha256:<12 hex>` for a file outside the store
    uri: str
    sha256: str


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
            f"results: {self.results}\nerrors:  {self.errors}"
        )


def parse_known_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """This job's options; everything else is left for Beam's PipelineOptions."""
    parser = argparse.ArgumentParser(
        prog="beam_jobs.classify",
        description=__doc__.split("\n")[0],
        allow_abbrev=False,  # never take a Beam option for an abbreviation of ours
    )
    parser.add_argument(
        "--input", required=True, help="Folder (searched recursively), glob, or gs:// s3:// prefix."
    )
    parser.add_argument(
        "--output", required=True, help="Results CSV; failures go to <stem>.errors.csv."
    )
    parser.add_argument(
        "--model", default="production", help="Alias, version (7, v7) or a .keras file."
    )
    parser.add_argument(
        "--store", help="Model store root [$DIGITFLOW_STORE, else $DIGITFLOW_HOME/models]."
    )
    parser.add_argument(
        "--shards", type=_positive_int, default=1, help="Write N result files, each with a header."
    )
    parser.add_argument(
        "--min_confidence",
        "--min-confidence",
        type=_probability,
        default=DEFAULT_MIN_CONFIDENCE,
        help="Rows below this confidence are marked low_confidence=true.",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="Replace existing results and errors files."
    )
    parser.add_argument(
        "--batch_size", type=_positive_int, default=DEFAULT_BATCH_SIZE, help="Images per predict."
    )
    parser.add_argument(
        "--progress_s",
        type=float,
        default=PROGRESS_EVERY_S,
        help="Seconds between progress lines in the log, per worker.",
    )
    return parser.parse_known_args(argv)


def job_args(
    source: str,
    output: str,
    *,
    model: str = "production",
    store: str | None = None,
    shards: int = 1,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    overwrite: bool = False,
    beam_args: list[str] | None = None,
) -> list[str]:
    """`run`'s argv for these settings, Beam's options last."""
    argv = ["--input", source, "--output", output, "--model", model, "--shards", str(shards)]
    argv += ["--min_confidence", str(min_confidence)]
    if store is not None:
        argv += ["--store", store]
    if overwrite:
        argv.append("--overwrite")
    return argv + list(beam_args or [])


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
    if _is_direct(options):
        images = found[Kind.IMAGE] + found[Kind.UNREADABLE]
        options = PipelineOptions(beam_args + direct_defaults(options, beam_args, images))
    log.info("%s", start_line(known.input, found, model, options))

    pipeline = beam.Pipeline(options=options)
    handler = KerasModelHandler(
        model.uri,
        sha256=model.sha256,
        batch_size=known.batch_size,
        intra_op_threads=_tf_threads(options),
    )
    errors = errors_path(known.output)
    paths, unreadable = pipeline | "ListInput" >> ListImageFiles(source)
    images, bad_images = paths | "Preprocess" >> PreprocessImages()
    results = images | "Classify" >> ClassifyImages(handler, model.label, known.min_confidence)
    failures = (unreadable, bad_images) | "AllFailures" >> beam.Flatten()
    error_lines = failures | "FormatErrors" >> FormatErrors()
    _ = results | "WriteResults" >> WriteCsv(known.output, COLUMNS, known.shards)
    _ = error_lines | "WriteErrors" >> WriteCsv(errors, ERROR_COLUMNS)
    _ = (results, error_lines) | "AllRows" >> beam.Flatten() | LogProgress(known.progress_s)

    counters = _run_cleaning_up(pipeline, known.output, known.shards)
    return ClassifySummary(
        input=known.input,
        results=sharded_paths(known.output, known.shards),
        errors=errors,
        model_version=model.label,
        model_uri=model.uri,
        matched=counters.get("files_matched", 0),
        classified=counters.get("images_classified", 0),
        failed=counters.get("images_failed", 0),
        ignored=counters.get("files_ignored", 0),
        low_confidence=counters.get("low_confidence", 0),
        elapsed_s=time.monotonic() - start,
    )


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


def direct_defaults(options: PipelineOptions, beam_args: list[str], files: int) -> list[str]:
    """Options to add on the DirectRunner, for a job of about `files` files; given ones win.

    Measured on this project's 2-core machine (README, "Bulk classification"): the in-process
    mode starts ~2.5 s sooner, the multi-process mode with a worker per core classifies ~1.7x
    faster once started; they break even near 4,500 images.
    """
    added = []
    mode = options.view_as(DirectOptions).direct_running_mode
    if not _given(beam_args, "direct_running_mode"):
        mode = "multi_processing" if files >= MULTI_PROCESS_FROM else "in_memory"
        added.append(f"--direct_running_mode={mode}")
    if mode != "in_memory" and not _given(beam_args, "direct_num_workers"):
        added.append(f"--direct_num_workers={os.cpu_count() or 1}")
    return added


def resolve_model(ref: str, store: str | None) -> LaunchModel:
    """Pin `ref` (alias, version or `.keras` path) to one verified model file."""
    try:
        resolved = ModelStore(store).resolve(ref)
    except StoreError as error:
        raise ClassifyError(
            f"no model for --model {ref}: {error} (promote a version, or pass --model PATH.keras)"
        ) from None
    if resolved.version is None:
        sha256 = sha256_file(resolved.local_path)
        return LaunchModel(f"sha256:{sha256[:12]}", resolved.uri, sha256)
    return LaunchModel(f"v{resolved.version}", resolved.uri, resolved.metadata["model_sha256"])


def start_line(
    source: str, found: Counter[Kind], model: LaunchModel, options: PipelineOptions
) -> str:
    """What the job is about to do: files matched, the model, the runner and its mode."""
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    if _is_direct(options):
        direct = options.view_as(DirectOptions)
        workers = direct.direct_num_workers if direct.direct_running_mode != "in_memory" else 1
        runner += f" ({direct.direct_running_mode}, {workers} worker{'s' * (workers > 1)})"
    return (
        f"classifying {source}: {found.total():,} files matched ({found[Kind.IMAGE]:,} images, "
        f"{found[Kind.UNREADABLE]:,} unreadable, {found[Kind.OTHER]:,} ignored); "
        f"model {model.label}; runner {runner}"
    )


def _run_cleaning_up(pipeline: beam.Pipeline, output: str, shards: int) -> dict[str, int]:
    """Run the pipeline to its end and return its counters; if it fails, remove the temp
    folders it created next to the output (and only those) before raising."""
    before = temp_folders(output, shards)
    try:
        result = pipeline.run()
        state = result.wait_until_finish()
        if state != PipelineState.DONE:
            raise RuntimeError(f"the job ended in state {state}")
    except BaseException:
        remove_temp_folders(temp_folders(output, shards) - before)
        raise
    return _counters(result)


def _tf_threads(options: PipelineOptions) -> int | None:
    """TensorFlow threads per worker when DirectRunner workers share this machine's cores."""
    direct = options.view_as(DirectOptions)
    if not _is_direct(options) or direct.direct_running_mode == "in_memory":
        return None
    return max(1, (os.cpu_count() or 1) // max(1, direct.direct_num_workers))


def _is_direct(options: PipelineOptions) -> bool:
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    return runner.lower().removesuffix("runner") in _DIRECT_RUNNERS


def _given(args: list[str], name: str) -> bool:
    return any(arg == f"--{name}" or arg.startswith(f"--{name}=") for arg in args)


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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    try:
        print(run().report())
    except ClassifyError as error:
        raise SystemExit(f"error: {error}") from None
