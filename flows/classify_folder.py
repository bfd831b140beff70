"""The `classify-folder` flow: one bulk classification with the Beam pipeline, as a Prefect run.

Bulk runs then show in the Prefect UI next to the retraining runs, each with its summary as a
markdown artifact (key `classify-folder-summary`). Importable on its own: it needs only Prefect
and `beam_jobs`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from beam_jobs.classify import ClassifySummary, job_args, run
from beam_jobs.csv_rows import DEFAULT_MIN_CONFIDENCE

SUMMARY_KEY = "classify-folder-summary"


def summary_markdown(summary: ClassifySummary) -> str:
    """The artifact: counts, speed, the model and where the CSV files are."""
    rows = [
        ("input", f"`{summary.input}`"),
        ("model", f"{summary.model_version} (`{summary.model_uri}`)"),
        ("files matched", f"{summary.matched:,}"),
        ("images", f"{summary.images:,}"),
        ("classified", f"{summary.classified:,} ({summary.low_confidence:,} low confidence)"),
        ("errors", f"{summary.failed:,}"),
        ("ignored (not images)", f"{summary.ignored:,}"),
        ("elapsed", f"{summary.elapsed_s:.1f} s"),
        ("images/s", f"{summary.images_per_s:,.0f}"),
        ("results", f"`{summary.results}`"),
        ("errors file", f"`{summary.errors}`"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    title = f"# Bulk classification: {summary.classified:,} of {summary.images:,} images"
    return f"{title}\n\n| | |\n| --- | --- |\n{table}\n"


@task(name="run-pipeline", cache_policy=NO_CACHE)
def run_pipeline(argv: list[str]) -> ClassifySummary:
    """Launch the Beam job and wait for it (on whatever runner the Beam options name)."""
    return run(argv)


@flow(name="classify-folder")
def classify_folder(
    source: str,
    output: str,
    model: str = "production",
    store: str | None = None,
    shards: int = 1,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    beam_args: list[str] | None = None,
) -> ClassifySummary:
    """Classify every image under `source` into `output` (CSV); publish the summary."""
    argv = job_args(
        source,
        output,
        model=model,
        store=store,
        shards=shards,
        min_confidence=min_confidence,
        beam_args=beam_args,
    )
    summary = run_pipeline(argv)
    get_run_logger().info("bulk classification done:\n%s", summary.report())
    create_markdown_artifact(
        summary_markdown(summary),
        key=SUMMARY_KEY,
        description=f"{summary.classified:,} images classified with {summary.model_version}",
    )
    return summary
