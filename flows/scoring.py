"""How a retrain run scores a model: on the `Evidence` every model in the run is judged on
(MNIST's test set, the spans' pooled holdout, the real-scan robustness suite)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from digitflow import robustness
from digitflow.data import Mnist
from flows.gate import Scores
from model_store.spans.records import LabelledImages


@dataclass(frozen=True)
class Evidence:
    """What every model in the run is judged on: MNIST's test set (in `data`), the spans'
    pooled holdout and the real-scan robustness suite."""

    data: Mnist
    spans: LabelledImages
    suite: robustness.Suite


def score(model: Any, evidence: Evidence) -> Scores:
    """`model` on MNIST's test set, on the spans' pooled holdout if it has images, and on the
    robustness suite."""
    from digitflow.evaluate import evaluate

    data, spans = evidence.data, evidence.spans
    holdout = None
    if len(spans.y_holdout):
        holdout = evaluate(model, spans.x_holdout, spans.y_holdout)
    test = evaluate(model, data.x_test, data.y_test)
    return Scores(test, holdout, robustness.score(model, evidence.suite))


def scores_line(scores: Scores) -> str:
    """The three accuracies in one log line; `-` for a test set the run does not have."""
    scans = "-" if scores.holdout is None else f"{scores.holdout.accuracy:.4f}"
    suite = "-" if scores.robustness is None else f"{scores.robustness.accuracy:.4f}"
    return (
        f"MNIST test accuracy {scores.test.accuracy:.4f}, own-scans holdout {scans}, "
        f"real-scan robustness {suite}"
    )


@task(cache_policy=NO_CACHE)
def evaluate_candidate(model_path: str, evidence: Evidence) -> Scores:
    """The candidate's accuracy, per-digit metrics and mistakes on every test set."""
    from digitflow.models import load_model

    scores = score(load_model(model_path), evidence)
    get_run_logger().info("candidate: %s", scores_line(scores))
    return scores
