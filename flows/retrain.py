"""The `retrain` flow: train a candidate, evaluate it next to production, gate, promote, report.

Every task is small and does one thing; the flow composes them. Production changes only in
`promote`, by compare-and-swap against the version the gate compared with, so a crash anywhere,
or a rejected candidate, leaves it untouched. A rejected candidate stays registered.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypedDict

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.runtime import flow_run
from prefect.states import Completed, State
from prefect.tasks import exponential_backoff

from digitflow import config
from digitflow.data import Mnist
from digitflow.evaluate import Evaluation
from digitflow.profiles import TrainConfig, train_config
from flows.artifacts import RunSummary, publish
from flows.gate import Decision, Thresholds, decide
from model_store import HistoryEntry, ModelStore, ModelVersion, build_metadata

TRAINING_LIBRARIES = ("digitflow", "keras", "tensorflow")


class TrainedCandidate(TypedDict):
    """A trained model saved to `path` (never the model object: it crosses a cache boundary).

    Plain JSON in the cache, so a cached result outlives changes to this module.
    """

    path: str
    epochs_run: int
    wall_seconds: float
    best_val_accuracy: float


@dataclass(frozen=True)
class Production:
    """The model `alias` pointed to when the run looked, evaluated on this run's test set."""

    version: int
    evaluation: Evaluation


@dataclass(frozen=True)
class RetrainOutcome:
    """What a run decided; the flow's result."""

    promoted: bool
    reason: str
    candidate_version: int
    production_version: int | None  # what `alias` points to after the run
    accuracy: float
    report_image: str


def candidate_file(data: Mnist, settings: TrainConfig) -> Path:
    """Where the model for this data and training config is kept, named by a hash of both.

    The versions of the code that trains are part of the name: an upgrade retrains.
    """
    libraries = {name: importlib.metadata.version(name) for name in TRAINING_LIBRARIES}
    identity = json.dumps(
        {"data": data.checksum, "config": settings.to_dict(), "libraries": libraries},
        sort_keys=True,
    )
    digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
    return config.home() / "cache" / "candidates" / f"{digest}.keras"


def _candidate_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The candidate file's path: data checksum + training config, and where it is kept."""
    return hashlib.sha256(str(parameters["output"]).encode()).hexdigest()


@task(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    cache_policy=NO_CACHE,
)
def load_data(train_limit: int | None, test_limit: int | None) -> Mnist:
    """Verified MNIST (cache, then the network sources), cut to the limits if given."""
    from digitflow.data import load_mnist

    data = load_mnist()
    if train_limit is None and test_limit is None:
        return data
    return data.subset(train=train_limit, test=test_limit)


@task(cache_key_fn=_candidate_cache_key, result_serializer="json")
def train_candidate(data: Mnist, settings: TrainConfig, output: Path) -> TrainedCandidate:
    """Train and save the model to `output`; cached while that file exists."""
    from digitflow.train import train

    result = train(data, settings, verbose=0)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f"{output.stem}.partial.keras")
    result.model.save(partial)
    os.replace(partial, output)  # a crash mid-save never leaves a file that looks complete
    get_run_logger().info(
        "trained %s in %d epochs, %.0f s",
        settings.architecture,
        result.epochs_run,
        result.wall_seconds,
    )
    return {
        "path": str(output),
        "epochs_run": result.epochs_run,
        "wall_seconds": result.wall_seconds,
        "best_val_accuracy": max(result.history["val_accuracy"]),
    }


@task(cache_policy=NO_CACHE)
def evaluate_candidate(model_path: str, data: Mnist) -> Evaluation:
    """The candidate's accuracy, per-digit metrics and mistakes on the test set."""
    from digitflow.evaluate import evaluate
    from digitflow.models import load_model

    evaluation = evaluate(load_model(model_path), data.x_test, data.y_test)
    get_run_logger().info("candidate test accuracy %.4f", evaluation.accuracy)
    return evaluation


@task(cache_policy=NO_CACHE)
def evaluate_production(store: str | None, alias: str, data: Mnist) -> Production | None:
    """The model `alias` points to now, on the same test set; None when the alias is unset."""
    from digitflow.evaluate import evaluate

    models = ModelStore(store)
    if alias not in models.aliases():
        get_run_logger().info("no %s model yet", alias)
        return None
    current = models.get(alias)
    evaluation = evaluate(models.load_model(current.version), data.x_test, data.y_test)
    get_run_logger().info(
        "%s is v%d, test accuracy %.4f", alias, current.version, evaluation.accuracy
    )
    return Production(current.version, evaluation)


@task(cache_policy=NO_CACHE)
def gate(candidate: Evaluation, production: Production | None, thresholds: Thresholds) -> Decision:
    """Apply the promotion rules; the decision carries its reason."""
    decision = decide(candidate, None if production is None else production.evaluation, thresholds)
    get_run_logger().info(decision.reason)
    return decision


@task(cache_policy=NO_CACHE)
def register_candidate(
    store: str | None, trained: TrainedCandidate, metadata: dict[str, Any]
) -> ModelVersion:
    """Copy the candidate into the store as a new version, whatever the gate said."""
    version = ModelStore(store).register(trained["path"], metadata)
    get_run_logger().info("registered v%d at %s", version.version, version.model_uri)
    return version


@task(cache_policy=NO_CACHE)
def promote(
    store: str | None, version: int, alias: str, expected: int | None, reason: str, actor: str
) -> HistoryEntry:
    """Point `alias` at the candidate, only if it still points where the gate saw it."""
    entry = ModelStore(store).promote(
        version, alias=alias, expected=expected, reason=reason, actor=actor
    )
    before = "none" if entry.from_version is None else f"v{entry.from_version}"
    get_run_logger().info("%s: %s -> v%d", alias, before, entry.to_version)
    return entry


@task(cache_policy=NO_CACHE)
def render_report_image(data: Mnist, evaluation: Evaluation, title: str, output: Path) -> Path:
    """Correct and wrong predictions and the confusion matrix, as a PNG."""
    from digitflow.report import render_report

    image = render_report(data.x_test, data.y_test, evaluation, title)
    output.parent.mkdir(parents=True, exist_ok=True)
    image.save(output)
    return output


@task(cache_policy=NO_CACHE)
def publish_report(summary: RunSummary) -> None:
    """The markdown report, per-digit table and image link, under stable artifact keys."""
    publish(summary)


def _training_line(settings: TrainConfig, trained: TrainedCandidate, cached: bool) -> str:
    how = "reused from the cache" if cached else "trained in this run"
    return (
        f"{settings.architecture}, {settings.profile} profile, {trained['epochs_run']} epochs, "
        f"{trained['wall_seconds']:.0f} s, best validation accuracy "
        f"{trained['best_val_accuracy']:.4f} ({how}: {trained['path']})"
    )


@flow(name="retrain", description="Train, evaluate, gate and promote the digit model.")
def retrain(
    profile: str = "full",
    architecture: str | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    min_accuracy: float = Thresholds.min_accuracy,
    max_regression: float = Thresholds.max_regression,
    min_digit_recall: float = Thresholds.min_digit_recall,
    store: str | None = None,
    alias: str = "production",
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> State:
    """Retrain the model and promote it to `alias` if it passes the gate.

    `store` is a path or URI (default: $DIGITFLOW_STORE or $DIGITFLOW_HOME/models);
    `train_limit`/`test_limit` keep only the first images, for quick runs and tests.
    """
    settings = train_config(profile, architecture=architecture, epochs=epochs, seed=seed)
    thresholds = Thresholds(min_accuracy, max_regression, min_digit_recall)
    run_id = str(flow_run.id)

    data = load_data(train_limit, test_limit)
    output = candidate_file(data, settings)
    training = train_candidate.with_options(refresh_cache=not output.exists())(
        data, settings, output, return_state=True
    )
    trained = training.result()  # raises, failing the run, if training failed
    candidate = evaluate_candidate(trained["path"], data)
    production = evaluate_production(store, alias, data)
    decision = gate(candidate, production, thresholds)

    metadata = build_metadata(
        metrics={
            "accuracy": candidate.accuracy,
            "loss": candidate.loss,
            "test_images": candidate.count,
            "recall": {str(m.digit): m.recall for m in candidate.per_digit},
        },
        params={**settings.to_dict(), "train_limit": train_limit, "test_limit": test_limit},
        architecture=settings.architecture,
        dataset_checksum=data.checksum,
        flow_run_id=run_id,
    )
    expected = None if production is None else production.version  # for compare-and-swap
    metadata["gate"] = {
        **decision.to_dict(),
        "thresholds": asdict(thresholds),
        "compared_with": expected,
    }
    version = register_candidate(store, trained, metadata)
    image = render_report_image(
        data,
        candidate,
        f"v{version.version}: test accuracy {candidate.accuracy:.4f} on {candidate.count} images",
        config.home() / "reports" / f"retrain-{run_id}.png",
    )
    # The one step that changes production, last but for publishing what happened.
    if decision.promote:
        promote(
            store, version.version, alias, expected, decision.reason, f"prefect-flow-run:{run_id}"
        )
    publish_report(
        RunSummary(
            candidate_version=version.version,
            candidate_uri=version.model_uri,
            candidate=candidate,
            production_version=expected,
            production=None if production is None else production.evaluation,
            decision=decision,
            thresholds=thresholds,
            alias=alias,
            store_root=str(ModelStore(store).root),
            training=_training_line(settings, trained, cached=training.name == "Cached"),
            report_image=image,
        )
    )
    outcome = RetrainOutcome(
        promoted=decision.promote,
        reason=decision.reason,
        candidate_version=version.version,
        production_version=version.version if decision.promote else expected,
        accuracy=candidate.accuracy,
        report_image=str(image),
    )
    return Completed(message=f"candidate v{version.version} {decision.reason}", data=outcome)
