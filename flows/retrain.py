"""The `retrain` flow: train a candidate, evaluate it next to production, gate, promote, report.

Every task is small and does one thing; the flow composes them. Production changes only in
`promote`, by compare-and-swap against the version the gate compared with, so a crash anywhere,
or a rejected candidate, leaves it untouched. A rejected candidate stays registered.

The run ends in a Completed-type state named `Promoted` or `Not promoted` (so the two look
different in the UI and automations can react to either), or Failed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypedDict

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.runtime import flow_run
from prefect.states import Completed, State
from prefect.tasks import exponential_backoff

from digitflow import config
from digitflow.data import Mnist
from digitflow.evaluate import Evaluation
from digitflow.profiles import TrainConfig, train_config
from flows.artifacts import PROGRESS_KEY, RunSummary, history_rows, publish
from flows.gate import Decision, Thresholds, decide
from model_store import ModelStore, ModelVersion, PromotionConflict, build_metadata
from model_store.refs import label

TRAINING_LIBRARIES = ("digitflow", "keras", "tensorflow")
PROMOTED, NOT_PROMOTED = "Promoted", "Not promoted"


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
    """What `alias` pointed to when the run looked: its evaluation on this run's test set, or
    why it could not be evaluated (a model that no longer loads must not block the nightly)."""

    version: int
    evaluation: Evaluation | None
    problem: str | None = None


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
    """A hash of the output path, which `candidate_file` derives from the data and config."""
    return hashlib.sha256(str(parameters["output"]).encode()).hexdigest()


@task(cache_policy=NO_CACHE)
def check_store(store: str | None) -> str:
    """Fail before any training when the store cannot take a new version; returns its root."""
    models = ModelStore(store)
    models.check_writable()
    return models.root


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
    """Train and save the model to `output`; cached while that file exists.

    Each epoch is a log line and moves the run's progress artifact; on a terminal, Keras
    draws its progress bar too.
    """
    from digitflow.train import EpochReport, train

    logger = get_run_logger()
    progress = create_progress_artifact(
        0.0, key=PROGRESS_KEY, description=f"Training {settings.architecture}: epoch 0"
    )

    def report(epoch: EpochReport) -> None:
        logger.info(epoch.line())
        update_progress_artifact(
            progress, 100.0 * epoch.epoch / epoch.epochs, description=epoch.line()
        )

    result = train(data, settings, verbose=1 if sys.stdout.isatty() else 0, on_epoch=report)
    update_progress_artifact(progress, 100.0, description=f"done in {result.epochs_run} epochs")
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f"{output.stem}.partial.keras")
    result.model.save(partial)
    os.replace(partial, output)  # a crash mid-save never leaves a file that looks complete
    logger.info(
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

    models, logger = ModelStore(store), get_run_logger()
    version = models.aliases().get(alias)
    if version is None:
        logger.info("no %s model yet", alias)
        return None
    try:
        evaluation = evaluate(models.load_model(version), data.x_test, data.y_test)
    except Exception as error:  # whatever broke it, the candidate is judged on the floors
        problem = f"{alias} {label(version)} cannot be evaluated: {_one_line(error)}"
        logger.warning(problem)
        return Production(version, None, problem)
    logger.info("%s is %s, test accuracy %.4f", alias, label(version), evaluation.accuracy)
    return Production(version, evaluation)


@task(cache_policy=NO_CACHE)
def gate(candidate: Evaluation, production: Production | None, thresholds: Thresholds) -> Decision:
    """Apply the promotion rules; the decision carries its reason."""
    if production is None:
        return decide(candidate, None, thresholds)
    return decide(candidate, production.evaluation, thresholds, production.problem)


@task(cache_policy=NO_CACHE)
def register_candidate(
    store: str | None, trained: TrainedCandidate, metadata: dict[str, Any]
) -> ModelVersion:
    """Copy the candidate into the store as a new version, whatever the gate said."""
    version = ModelStore(store).register(trained["path"], metadata)
    get_run_logger().info("registered %s at %s", label(version.version), version.model_uri)
    return version


@task(cache_policy=NO_CACHE)
def promote(
    store: str | None, version: int, alias: str, expected: int | None, reason: str, actor: str
) -> int | None:
    """Point `alias` at the candidate, only if it still points where the gate saw it.

    Returns what `alias` points to afterwards: the candidate, or the version of a run that
    promoted first (the candidate's metadata then records that it lost the race).
    """
    models, logger = ModelStore(store), get_run_logger()
    try:
        entry = models.promote(version, alias=alias, expected=expected, reason=reason, actor=actor)
    except PromotionConflict:
        winner = models.aliases().get(alias)
        models.annotate(version, {"promotion": lost_race(winner)})
        logger.warning("%s %s", label(version), lost_race(winner))
        return winner
    logger.info("%s: %s -> %s", alias, label(entry.from_version), label(entry.to_version))
    return entry.to_version


def lost_race(winner: int | None) -> str:
    return f"lost the promotion race to {label(winner)}"


@task(cache_policy=NO_CACHE)
def render_report_image(data: Mnist, evaluation: Evaluation, title: str, output: Path) -> Path:
    """Correct and wrong predictions and the confusion matrix, as a PNG."""
    from digitflow.report import render_report

    image = render_report(data.x_test, data.y_test, evaluation, title)
    output.parent.mkdir(parents=True, exist_ok=True)
    image.save(output)
    return output


@task(cache_policy=NO_CACHE)
def publish_report(summary: RunSummary, store: str | None) -> None:
    """The markdown report (image inline), per-digit table and the store's nightly history."""
    models = ModelStore(store)
    publish(summary, history_rows(models.list_versions(), models.history(), summary.alias))


def candidate_metadata(
    candidate: Evaluation,
    settings: TrainConfig,
    data: Mnist,
    limits: dict[str, int | None],
    decision: Decision,
    thresholds: Thresholds,
    compared_with: int | None,
) -> dict[str, Any]:
    """What the store records with the candidate: metrics, provenance and the gate's verdict."""
    metadata = build_metadata(
        metrics={
            "accuracy": candidate.accuracy,
            "loss": candidate.loss,
            "test_images": candidate.count,
            "recall": {str(m.digit): m.recall for m in candidate.per_digit},
        },
        params={**settings.to_dict(), **limits},
        architecture=settings.architecture,
        dataset_checksum=data.checksum,
        flow_run_id=str(flow_run.id),
    )
    metadata["gate"] = {
        **decision.to_dict(),
        "thresholds": asdict(thresholds),
        "compared_with": compared_with,
    }
    return metadata


def _training_line(settings: TrainConfig, trained: TrainedCandidate, cached: bool) -> str:
    how = "reused from the cache" if cached else "trained in this run"
    return (
        f"{settings.architecture}, {settings.profile} profile, {trained['epochs_run']} epochs, "
        f"{trained['wall_seconds']:.0f} s, best validation accuracy "
        f"{trained['best_val_accuracy']:.4f} ({how}: {trained['path']})"
    )


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


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
    store_root = check_store(store)

    data = load_data(train_limit, test_limit)
    output = candidate_file(data, settings)
    training = train_candidate.with_options(refresh_cache=not output.exists())(
        data, settings, output, return_state=True
    )
    trained = training.result()  # raises, failing the run, if training failed
    candidate = evaluate_candidate(trained["path"], data)
    production = evaluate_production(store, alias, data)
    decision = gate(candidate, production, thresholds)
    expected = None if production is None else production.version  # for compare-and-swap
    limits = {"train_limit": train_limit, "test_limit": test_limit}
    metadata = candidate_metadata(
        candidate, settings, data, limits, decision, thresholds, expected
    )
    registered = register_candidate(store, trained, metadata)
    version = registered.version
    image = render_report_image(
        data,
        candidate,
        f"v{version}: test accuracy {candidate.accuracy:.4f} on {candidate.count} images",
        config.home() / "reports" / f"retrain-{flow_run.id}.png",
    )
    # The one step that changes production, last but for publishing what happened.
    after, reason = expected, decision.reason
    if decision.promote:
        actor = f"prefect-flow-run:{flow_run.id}"
        after = promote(store, version, alias, expected, decision.reason, actor)
        if after != version:
            reason = f"not promoted: passed the gate but {lost_race(after)}"
    promoted = after == version
    publish_report(
        RunSummary(
            candidate_version=version,
            candidate_uri=registered.model_uri,
            candidate=candidate,
            production_version=expected,
            production=None if production is None else production.evaluation,
            decision=decision,
            promoted=promoted,
            outcome=reason,
            thresholds=thresholds,
            alias=alias,
            store_root=store_root,
            training=_training_line(settings, trained, cached=training.name == "Cached"),
            report_image=image,
        ),
        store,
    )
    outcome = RetrainOutcome(
        promoted=promoted,
        reason=reason,
        candidate_version=version,
        production_version=after,
        accuracy=candidate.accuracy,
        report_image=str(image),
    )
    return Completed(
        name=PROMOTED if promoted else NOT_PROMOTED,
        message=f"candidate v{version} {reason}",
        data=outcome,
    )
