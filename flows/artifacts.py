"""What a retrain run shows in the Prefect UI: a markdown report, a per-digit table, a link.

The keys are stable: the UI's Artifacts page keeps each key's history, one version per run.
The builders are plain functions of the run's results; `publish` sends them to Prefect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from digitflow.evaluate import Evaluation
from flows.gate import Decision, Thresholds

REPORT_KEY = "retrain-report"
PER_DIGIT_KEY = "retrain-per-digit"
IMAGE_KEY = "retrain-report-image"


@dataclass(frozen=True)
class RunSummary:
    """Everything the report says about one run."""

    candidate_version: int
    candidate_uri: str
    candidate: Evaluation
    production_version: int | None  # the one the candidate was compared with
    production: Evaluation | None
    decision: Decision
    thresholds: Thresholds
    alias: str
    store_root: str
    training: str  # one line: architecture, profile, epochs, time, cached or not
    report_image: Path


def _metrics(evaluation: Evaluation) -> dict[str, str]:
    measured = [m for m in evaluation.per_digit if m.support > 0]
    worst = min(measured, key=lambda m: m.recall, default=None)
    return {
        "test accuracy": f"{evaluation.accuracy:.4f}",
        "test loss": f"{evaluation.loss:.4f}",
        "lowest digit recall": f"{worst.recall:.4f} (digit {worst.digit})" if worst else "-",
        "wrong predictions": str(len(evaluation.mistakes)),
        "test images": str(evaluation.count),
    }


def report_markdown(summary: RunSummary) -> str:
    """The run's report: decision first, then candidate vs production, checks and where."""
    decision, thresholds = summary.decision, summary.thresholds
    verdict = "PROMOTED" if decision.promote else "NOT PROMOTED"
    after = summary.candidate_version if decision.promote else summary.production_version
    ours = _metrics(summary.candidate)
    theirs = _metrics(summary.production) if summary.production is not None else {}
    production = "none" if summary.production_version is None else f"v{summary.production_version}"
    lines = [
        f"# Retrain: v{summary.candidate_version} {verdict}",
        "",
        f"**Decision:** {decision.reason}",
        "",
        f"| metric | candidate v{summary.candidate_version} | production {production} |",
        "| --- | --- | --- |",
        *(f"| {name} | {value} | {theirs.get(name, '-')} |" for name, value in ours.items()),
        "",
        "## Gate",
        "",
        "| check | result | detail |",
        "| --- | --- | --- |",
        *(
            f"| {check.name} | {'pass' if check.passed else 'FAIL'} | {check.detail} |"
            for check in decision.checks
        ),
        "",
        f"Thresholds: accuracy >= {thresholds.min_accuracy}, regression <= "
        f"{thresholds.max_regression}, every digit's recall >= {thresholds.min_digit_recall}.",
        "",
        "## Model",
        "",
        f"- candidate: v{summary.candidate_version} at `{summary.candidate_uri}`",
        f"- {summary.alias} after this run: {'none' if after is None else f'v{after}'}",
        f"- store: `{summary.store_root}`",
        f"- training: {summary.training}",
        f"- report image: `{summary.report_image}`",
    ]
    return "\n".join(lines) + "\n"


def per_digit_rows(candidate: Evaluation, production: Evaluation | None) -> list[dict]:
    """One row per digit: candidate precision and recall, production's next to them."""
    rows = []
    for ours in candidate.per_digit:
        row = {
            "digit": ours.digit,
            "support": ours.support,
            "precision": round(ours.precision, 4),
            "recall": round(ours.recall, 4),
        }
        if production is not None:
            theirs = production.per_digit[ours.digit]
            row["production precision"] = round(theirs.precision, 4)
            row["production recall"] = round(theirs.recall, 4)
        rows.append(row)
    return rows


def publish(summary: RunSummary) -> None:
    """Create the run's three artifacts under their stable keys."""
    from prefect.artifacts import (
        create_link_artifact,
        create_markdown_artifact,
        create_table_artifact,
    )

    version = f"v{summary.candidate_version}"
    create_markdown_artifact(
        report_markdown(summary),
        key=REPORT_KEY,
        description=f"Candidate {version}: {summary.decision.reason}",
    )
    create_table_artifact(
        per_digit_rows(summary.candidate, summary.production),
        key=PER_DIGIT_KEY,
        description=f"Per-digit precision and recall of candidate {version} on the test set",
    )
    create_link_artifact(
        summary.report_image.resolve().as_uri(),
        link_text=f"{version}: confusion matrix and wrong predictions",
        key=IMAGE_KEY,
        description="Report image on the host that ran the flow",
    )
