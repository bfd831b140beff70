"""How a retrain run ends: what it publishes (the report image, the markdown report with the
per-digit table and the store's nightly history, or one line when nothing was trained) and the
Completed-type state it ends in, named `Promoted`, `Not promoted` or `Unchanged`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, State

from digitflow import config
from digitflow.data import Mnist
from digitflow.evaluate import Evaluation
from flows.artifacts import RunSummary, history_rows, publish, publish_unchanged
from flows.candidate import Candidate
from flows.gate import FLOORS, Baseline, Decision, Scores
from flows.options import RetrainOptions
from flows.promotion import Promotion
from model_store import ModelStore, ModelVersion
from model_store.refs import label
from model_store.spans.records import LabelledImages

PROMOTED, NOT_PROMOTED, UNCHANGED = "Promoted", "Not promoted", "Unchanged"


@dataclass(frozen=True)
class RetrainOutcome:
    """What a run decided; the flow's result."""

    promoted: bool
    reason: str
    candidate_version: int
    production_version: int | None  # what `alias` points to after the run
    accuracy: float
    report_image: str


@task(cache_policy=NO_CACHE)
def report_unchanged(message: str) -> None:
    """The run's report when nothing new was trained: why, in one line."""
    get_run_logger().info(message)
    publish_unchanged(message)


def unchanged(alias: str, version: int, decision: Decision) -> State:
    """`Unchanged`, Completed, with the version that still serves as the result."""
    floors = "; ".join(check.detail for check in decision.checks if check.name in FLOORS)
    message = (
        f"unchanged: {alias} {label(version)} was trained on the same data and config "
        f"and passes today's gate: {floors}"
    )
    report_unchanged(message)
    return Completed(name=UNCHANGED, message=message, data=version)


@task(cache_policy=NO_CACHE)
def render_report_image(data: Mnist, candidate: Evaluation, version: int) -> Path:
    """Correct and wrong predictions and the confusion matrix, as a PNG under the home."""
    from digitflow.report import render_report

    title = f"v{version}: test accuracy {candidate.accuracy:.4f} on {candidate.count} images"
    image = render_report(data.x_test, data.y_test, candidate, title)
    output = config.home() / "reports" / f"retrain-{flow_run.id}.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    image.save(output)
    return output


@task(cache_policy=NO_CACHE)
def publish_report(
    options: RetrainOptions,
    candidate: Candidate,
    spans: LabelledImages,
    registered: ModelVersion,
    scores: Scores,
    baseline: Baseline | None,
    decision: Decision,
    promotion: Promotion,
    image: Path,
) -> None:
    """The markdown report (image inline), per-digit table and the store's nightly history."""
    models = ModelStore(options.store)
    summary = RunSummary(
        candidate_version=registered.version,
        candidate_uri=registered.model_uri,
        candidate=scores,
        baseline=baseline,
        decision=decision,
        promoted=promotion.promoted,
        after=promotion.after,
        outcome=promotion.reason,
        thresholds=options.thresholds,
        alias=options.alias,
        store_root=models.root,
        training=candidate.about,
        spans=spans.spans,
        report_image=image,
    )
    publish(summary, history_rows(models.list_versions(), models.history(), options.alias))


def final_state(
    subject: str, version: int, candidate: Evaluation, promotion: Promotion, image: Path
) -> State:
    """`Promoted` or `Not promoted`, both Completed, with the outcome as the run's result."""
    outcome = RetrainOutcome(
        promoted=promotion.promoted,
        reason=promotion.reason,
        candidate_version=version,
        production_version=promotion.after,
        accuracy=candidate.accuracy,
        report_image=str(image),
    )
    return Completed(
        name=PROMOTED if promotion.promoted else NOT_PROMOTED,
        message=f"{subject} {promotion.reason}",
        data=outcome,
    )
