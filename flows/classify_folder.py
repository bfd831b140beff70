"""The `classify-folder` flow: one bulk classification with the Beam pipeline, as a Prefect run.

Bulk runs then show in the Prefect UI next to the retraining runs, each with its summary as a
markdown artifact (key `classify-folder-summary`) that lists the first errors and says whether the
predictions drifted from the model's reference profile (beam_jobs.drift). A run with bad
files ends in a Completed state named `Completed with errors (N)`. Its parameters are the fields
of `beam_jobs.options.ClassifyOptions` (see `flows.options.flat`), then `beam_args`.
"""

from __future__ import annotations

import csv
import io
import itertools

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State

from beam_jobs.classify import ClassifySummary, run
from beam_jobs.options import ClassifyOptions
from flows.artifacts import markdown_text
from flows.options import flat

SUMMARY_KEY = "classify-folder-summary"
FIRST_ERRORS = 20


def first_errors(errors_csv: str, limit: int = FIRST_ERRORS) -> list[tuple[str, str]]:
    """The first `limit` (path, reason) rows of an errors file, local or on an object store."""
    with FileSystems.open(errors_csv, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        rows = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        next(rows, None)  # the header
        return [(path, reason) for path, reason in itertools.islice(rows, limit)]


def summary_markdown(summary: ClassifySummary, errors: list[tuple[str, str]]) -> str:
    """The artifact: counts, speed, the model, drift, where the CSV files are, the first errors.

    Paths, names and reasons are escaped (`markdown_text`): one table cell each, no markup.
    """
    rows = [
        ("input", markdown_text(summary.input)),
        ("model", f"{markdown_text(summary.model_version)} ({markdown_text(summary.model_uri)})"),
        ("drift", markdown_text(summary.drift.line())),
        ("files matched", f"{summary.matched:,}"),
        ("images", f"{summary.images:,}"),
        ("classified", f"{summary.classified:,} ({summary.low_confidence:,} low confidence)"),
        ("errors", f"{summary.failed:,}"),
        ("ignored (not images)", f"{summary.ignored:,}"),
        ("elapsed", f"{summary.elapsed_s:.1f} s"),
        ("images/s", f"{summary.images_per_s:,.0f}"),
        ("results", markdown_text(summary.results)),
        ("errors file", markdown_text(summary.errors)),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    title = f"# Bulk classification: {summary.classified:,} of {summary.images:,} images"
    markdown = f"{title}\n\n| | |\n| --- | --- |\n{table}\n"
    if errors:
        shown = f"first {len(errors)} of {summary.failed:,}"
        lines = "\n".join(
            f"| {markdown_text(path)} | {markdown_text(reason)} |" for path, reason in errors
        )
        markdown += f"\n## Errors ({shown})\n\n| file | reason |\n| --- | --- |\n{lines}\n"
    return markdown


def final_state(summary: ClassifySummary) -> State:
    """Completed, named `Completed with errors (N)` when N files could not be classified."""
    name = f"Completed with errors ({summary.failed})" if summary.failed else "Completed"
    message = (
        f"{summary.classified:,} of {summary.images:,} images classified, "
        f"{summary.failed:,} errors (in {summary.errors})"
    )
    return Completed(name=name, message=message, data=summary)


@task(name="run-pipeline", cache_policy=NO_CACHE)
def run_pipeline(options: ClassifyOptions, beam_args: list[str]) -> ClassifySummary:
    """Launch the Beam job and wait for it (on whatever runner the Beam options name)."""
    return run(options, beam_args)


@flow(name="classify-folder", description="Classify a folder of digit scans into CSV, with Beam.")
@flat(ClassifyOptions)
def classify_folder(options: ClassifyOptions, beam_args: list[str] | None = None) -> State:
    """Classify every image under `source` into `output` (CSV); publish the summary.

    Ends Completed (`Completed with errors (N)` when N files failed), the summary as its result.
    `beam_args` are Beam's options, e.g. `--runner=DataflowRunner`.
    """
    summary = run_pipeline(options, beam_args or [])
    logger = get_run_logger()
    logger.info("bulk classification done:\n%s", summary.report())
    if summary.drift.detected:
        logger.warning("%s", summary.drift.line())
    errors = first_errors(summary.errors) if summary.failed else []
    create_markdown_artifact(
        summary_markdown(summary, errors),
        key=SUMMARY_KEY,
        description=f"{summary.classified:,} images classified with {summary.model_version}",
    )
    return final_state(summary)
