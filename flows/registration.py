"""What the store records with a candidate trained in the run (its `ModelCard`), and the task
that registers it as a new version, whatever the gate said."""

from __future__ import annotations

from dataclasses import asdict

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from digitflow.data import Mnist
from digitflow.evaluate import Evaluation
from flows.candidate import Training
from flows.gate import Baseline, Decision, Scores
from flows.options import RetrainOptions
from model_store import ModelStore, ModelVersion
from model_store.card import (
    GateVerdict,
    HoldoutScores,
    Metrics,
    ModelCard,
    Reference,
    Robustness,
    Score,
    SpanUse,
)
from model_store.metadata import build_card
from model_store.refs import label
from model_store.spans.records import LabelledImages


def _score(evaluation: Evaluation | None) -> Score | None:
    return None if evaluation is None else Score.from_evaluation(evaluation)


def candidate_card(
    options: RetrainOptions,
    training: Training,
    data: Mnist,
    spans: LabelledImages,
    identity: str,
    candidate: Scores,
    baseline: Baseline | None,
    decision: Decision,
) -> ModelCard:
    """What the store records with the candidate: metrics, provenance, the spans it learned
    from, its identity, its reference prediction profile and the gate's verdict."""
    limits = {"train_limit": options.train_limit, "test_limit": options.test_limit}
    theirs = None if baseline is None or baseline.scores is None else baseline.scores.holdout
    suite = candidate.robustness
    return build_card(
        metrics=Metrics.from_evaluation(candidate.test),
        params={**training.settings.to_dict(), **limits, "force": options.force},
        architecture=training.settings.architecture,
        dataset_checksum=data.checksum,
        flow_run_id=str(flow_run.id),
        identity=identity,
        spans=SpanUse(
            names=spans.spans,
            checksum=spans.checksum,
            train_images=len(spans.y_train),
            holdout_images=len(spans.y_holdout),
        ),
        holdout=HoldoutScores(_score(candidate.holdout), _score(theirs)),
        reference=Reference.from_profile(candidate.test.profile),
        robustness=None if suite is None else Robustness.from_score(suite),
        gate=GateVerdict.from_decision(
            decision,
            asdict(options.thresholds),
            None if baseline is None else baseline.version,
        ),
    )


@task(cache_policy=NO_CACHE)
def register_candidate(store: str | None, model_path: str, card: ModelCard) -> ModelVersion:
    """Copy the candidate into the store as a new version, whatever the gate said."""
    version = ModelStore(store).register(model_path, card)
    get_run_logger().info("registered %s at %s", label(version.version), version.model_uri)
    return version
