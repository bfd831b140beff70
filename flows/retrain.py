"""The `retrain` flow: train a candidate, evaluate it next to production, gate, promote, report.

The candidate learns from MNIST plus the train images of the store's labelled spans (people's
own scans), and is judged on MNIST's test set and on the spans' pooled holdout. Every task is
small and does one thing; the flow composes them. Production changes only in `promote`, by
compare-and-swap against the version the gate compared with, so a crash anywhere, or a rejected
candidate, leaves it untouched. A rejected candidate stays registered.

A run whose data, training config and code match a registered version's (its `identity`)
trains and registers nothing, unless forced. The run ends in a Completed-type state named
`Promoted`, `Not promoted` or `Unchanged` (so they look different in the UI and automations can
react to each), or Failed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
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
from digitflow.profiles import TrainConfig
from flows.artifacts import (
    PROGRESS_KEY,
    RunSummary,
    history_rows,
    publish,
    publish_unchanged,
    spans_text,
)
from flows.gate import Decision, Holdout, Thresholds, decide
from flows.options import RetrainOptions, flat
from model_store import ModelStore, ModelVersion, PromotionConflict, build_metadata
from model_store.metadata import code_version
from model_store.refs import label
from model_store.spans import LabelledImages, SpanStore

TRAINING_LIBRARIES = ("digitflow", "keras", "tensorflow")
PROMOTED, NOT_PROMOTED, UNCHANGED = "Promoted", "Not promoted", "Unchanged"


class TrainedCandidate(TypedDict):
    """A trained model saved to `path` (never the model object: it crosses a cache boundary).

    Plain JSON in the cache, so a cached result outlives changes to this module.
    """

    path: str
    epochs_run: int
    wall_seconds: float
    best_val_accuracy: float


@dataclass(frozen=True)
class Scores:
    """A model on MNIST's test set and on the own-scans holdout (None: no holdout images)."""

    test: Evaluation
    holdout: Evaluation | None


@dataclass(frozen=True)
class Production:
    """What `alias` pointed to when the run looked: its scores on this run's test images, or
    why it could not be evaluated (a model that no longer loads must not block the nightly)."""

    version: int
    scores: Scores | None
    problem: str | None = None


@dataclass(frozen=True)
class Training:
    """The candidate's training: its config, the trained model, and whether it was cached."""

    settings: TrainConfig
    model: TrainedCandidate
    cached: bool  # reused from an earlier run with the same data and config

    @property
    def path(self) -> str:
        return self.model["path"]

    def line(self) -> str:
        """One line for the report: architecture, profile, epochs, time, cached or not."""
        how = "reused from the cache" if self.cached else "trained in this run"
        return (
            f"{self.settings.architecture}, {self.settings.profile} profile, "
            f"{self.model['epochs_run']} epochs, {self.model['wall_seconds']:.0f} s, best "
            f"validation accuracy {self.model['best_val_accuracy']:.4f} ({how}: {self.path})"
        )


@dataclass(frozen=True)
class Promotion:
    """Whether the candidate was promoted, where `alias` points after the run, and why."""

    promoted: bool
    after: int | None
    reason: str


@dataclass(frozen=True)
class RetrainOutcome:
    """What a run decided; the flow's result."""

    promoted: bool
    reason: str
    candidate_version: int
    production_version: int | None  # what `alias` points to after the run
    accuracy: float
    report_image: str


def _training(data: Mnist, settings: TrainConfig) -> dict[str, Any]:
    """What determines the trained model: data checksum, training config, library versions."""
    libraries = {name: importlib.metadata.version(name) for name in TRAINING_LIBRARIES}
    return {"data": data.checksum, "config": settings.to_dict(), "libraries": libraries}


def _digest(value: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def candidate_file(data: Mnist, settings: TrainConfig) -> Path:
    """Where the model for this data and training config is kept, named by a hash of both.

    The versions of the code that trains are part of the name: an upgrade retrains.
    """
    digest = _digest(_training(data, settings))[:32]
    return config.home() / "cache" / "candidates" / f"{digest}.keras"


def run_identity(data: Mnist, settings: TrainConfig) -> str:
    """A hash of the data (MNIST's and the spans' checksums), the training config with its
    seed, the library versions and digitflow's commit: equal identities, the same model."""
    return _digest({**_training(data, settings), "code": code_version()})


def _candidate_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """A hash of the output path, which `candidate_file` derives from the data and config."""
    return hashlib.sha256(str(parameters["output"]).encode()).hexdigest()


@task(cache_policy=NO_CACHE)
def check_store(store: str | None) -> None:
    """Fail before any training when the store cannot take a new version."""
    ModelStore(store).check_writable()


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


@task(cache_policy=NO_CACHE)
def load_spans(store: str | None) -> LabelledImages:
    """The accepted labelled spans in the store: their train images and pooled holdout."""
    images = SpanStore(store).active_images()
    get_run_logger().info(
        "%s: %d train, %d holdout images",
        spans_text(images.spans),
        len(images.y_train),
        len(images.y_holdout),
    )
    return images


def with_spans(mnist: Mnist, spans: LabelledImages) -> Mnist:
    """MNIST with the spans' train images after its own; its checksum covers the spans'."""
    if spans.empty:
        return mnist
    return replace(
        mnist,
        x_train=np.concatenate([mnist.x_train, spans.x_train]),
        y_train=np.concatenate([mnist.y_train, spans.y_train]),
        source=f"{mnist.source} + {spans_text(spans.spans)}",
        checksum=f"{mnist.checksum}+spans:{spans.checksum}",
    )


@task(cache_policy=NO_CACHE)
def trained_before(store: str | None, identity: str) -> int | None:
    """The newest version with this identity: trained on the same data, config and code."""
    versions = ModelStore(store).list_versions()
    return max(
        (v.version for v in versions if v.metadata.get("identity") == identity), default=None
    )


@task(cache_policy=NO_CACHE)
def report_unchanged(message: str) -> None:
    """The run's report when nothing new was trained: why, in one line."""
    get_run_logger().info(message)
    publish_unchanged(message)


def unchanged(version: int) -> State:
    """`Unchanged`, Completed, with the version trained on the same data and config as result."""
    message = f"unchanged: {label(version)} was trained on the same data and config"
    report_unchanged(message)
    return Completed(name=UNCHANGED, message=message, data=version)


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


def train_or_reuse(data: Mnist, settings: TrainConfig) -> Training:
    """The candidate for this data and config, reused while its file exists.

    Raises, failing the run, if training failed.
    """
    output = candidate_file(data, settings)
    state = train_candidate.with_options(refresh_cache=not output.exists())(
        data, settings, output, return_state=True
    )
    return Training(settings, state.result(), cached=state.name == "Cached")


def score(model: Any, data: Mnist, spans: LabelledImages) -> Scores:
    """`model` on MNIST's test set and on the spans' pooled holdout, if it has images."""
    from digitflow.evaluate import evaluate

    holdout = None
    if len(spans.y_holdout):
        holdout = evaluate(model, spans.x_holdout, spans.y_holdout)
    return Scores(evaluate(model, data.x_test, data.y_test), holdout)


def _scores_line(scores: Scores) -> str:
    scans = "-" if scores.holdout is None else f"{scores.holdout.accuracy:.4f}"
    return f"MNIST test accuracy {scores.test.accuracy:.4f}, own-scans holdout {scans}"


@task(cache_policy=NO_CACHE)
def evaluate_candidate(model_path: str, data: Mnist, spans: LabelledImages) -> Scores:
    """The candidate's accuracy, per-digit metrics and mistakes on both test sets."""
    from digitflow.models import load_model

    scores = score(load_model(model_path), data, spans)
    get_run_logger().info("candidate: %s", _scores_line(scores))
    return scores


@task(cache_policy=NO_CACHE)
def evaluate_production(
    store: str | None, alias: str, data: Mnist, spans: LabelledImages
) -> Production | None:
    """The model `alias` points to now, on the same images; None when the alias is unset."""
    models, logger = ModelStore(store), get_run_logger()
    version = models.aliases().get(alias)
    if version is None:
        logger.info("no %s model yet", alias)
        return None
    try:
        scores = score(models.load_model(version), data, spans)
    except Exception as error:  # whatever broke it, the candidate is judged on the floors
        problem = f"{alias} {label(version)} cannot be evaluated: {_one_line(error)}"
        logger.warning(problem)
        return Production(version, None, problem)
    logger.info("%s is %s: %s", alias, label(version), _scores_line(scores))
    return Production(version, scores)


@task(cache_policy=NO_CACHE)
def gate(candidate: Scores, production: Production | None, thresholds: Thresholds) -> Decision:
    """Apply the promotion rules; the decision carries its reason."""
    theirs = None if production is None else production.scores
    holdout = None
    if candidate.holdout is not None:
        holdout = Holdout(candidate.holdout, None if theirs is None else theirs.holdout)
    problem = None if production is None else production.problem
    return decide(
        candidate.test, None if theirs is None else theirs.test, thresholds, problem, holdout
    )


def _holdout_metrics(holdout: Evaluation | None) -> dict[str, Any] | None:
    return None if holdout is None else {"accuracy": holdout.accuracy, "count": holdout.count}


def candidate_metadata(
    options: RetrainOptions,
    training: Training,
    data: Mnist,
    spans: LabelledImages,
    identity: str,
    candidate: Scores,
    decision: Decision,
    production: Production | None,
) -> dict[str, Any]:
    """What the store records with the candidate: metrics, provenance, the spans it learned
    from, its identity, its reference prediction profile and the gate's verdict."""
    limits = {"train_limit": options.train_limit, "test_limit": options.test_limit}
    test = candidate.test
    metadata = build_metadata(
        metrics={
            "accuracy": test.accuracy,
            "loss": test.loss,
            "test_images": test.count,
            "recall": {str(m.digit): m.recall for m in test.per_digit},
        },
        params={**training.settings.to_dict(), **limits, "force": options.force},
        architecture=training.settings.architecture,
        dataset_checksum=data.checksum,
        flow_run_id=str(flow_run.id),
    )
    theirs = None if production is None else production.scores
    metadata["identity"] = identity
    metadata["spans"] = {
        "names": list(spans.spans),
        "checksum": spans.checksum,
        "train_images": len(spans.y_train),
        "holdout_images": len(spans.y_holdout),
    }
    metadata["holdout"] = {
        "candidate": _holdout_metrics(candidate.holdout),
        "production": None if theirs is None else _holdout_metrics(theirs.holdout),
    }
    metadata["reference"] = test.profile.to_dict()
    metadata["gate"] = {
        **decision.to_dict(),
        "thresholds": asdict(options.thresholds),
        "compared_with": None if production is None else production.version,
    }
    return metadata


@task(cache_policy=NO_CACHE)
def register_candidate(
    store: str | None, model_path: str, metadata: dict[str, Any]
) -> ModelVersion:
    """Copy the candidate into the store as a new version, whatever the gate said."""
    version = ModelStore(store).register(model_path, metadata)
    get_run_logger().info("registered %s at %s", label(version.version), version.model_uri)
    return version


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


def promote_if_passed(
    options: RetrainOptions, version: int, decision: Decision, production: Production | None
) -> Promotion:
    """Promote a candidate that passed the gate, by compare-and-swap against what it saw."""
    expected = None if production is None else production.version
    if not decision.promote:
        return Promotion(False, expected, decision.reason)
    actor = f"prefect-flow-run:{flow_run.id}"
    after = promote(options.store, version, options.alias, expected, decision.reason, actor)
    if after != version:
        return Promotion(False, after, f"not promoted: passed the gate but {lost_race(after)}")
    return Promotion(True, after, decision.reason)


@task(cache_policy=NO_CACHE)
def publish_report(
    options: RetrainOptions,
    training: Training,
    spans: LabelledImages,
    registered: ModelVersion,
    candidate: Scores,
    production: Production | None,
    decision: Decision,
    promotion: Promotion,
    image: Path,
) -> None:
    """The markdown report (image inline), per-digit table and the store's nightly history."""
    models = ModelStore(options.store)
    theirs = None if production is None else production.scores
    summary = RunSummary(
        candidate_version=registered.version,
        candidate_uri=registered.model_uri,
        candidate=candidate.test,
        candidate_holdout=candidate.holdout,
        production_version=None if production is None else production.version,
        production=None if theirs is None else theirs.test,
        production_holdout=None if theirs is None else theirs.holdout,
        decision=decision,
        promoted=promotion.promoted,
        outcome=promotion.reason,
        thresholds=options.thresholds,
        alias=options.alias,
        store_root=models.root,
        training=training.line(),
        spans=spans.spans,
        report_image=image,
    )
    publish(summary, history_rows(models.list_versions(), models.history(), options.alias))


def final_state(version: int, candidate: Evaluation, promotion: Promotion, image: Path) -> State:
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
        message=f"candidate v{version} {promotion.reason}",
        data=outcome,
    )


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


@flow(name="retrain", description="Train, evaluate, gate and promote the digit model.")
@flat(RetrainOptions)
def retrain(options: RetrainOptions) -> State:
    """Retrain the model on MNIST and the store's spans; promote it to `alias` if it passes.

    `store` is a path or URI (default: $DIGITFLOW_STORE or $DIGITFLOW_HOME/models), for the
    models and the spans; `train_limit`/`test_limit` cut MNIST only, for quick runs and tests.
    """
    settings = options.training_config()  # an unknown profile fails the run before any work
    check_store(options.store)
    spans = load_spans(options.store)
    data = with_spans(load_data(options.train_limit, options.test_limit), spans)
    identity = run_identity(data, settings)
    same = trained_before(options.store, identity)
    if same is not None and not options.force:
        return unchanged(same)
    training = train_or_reuse(data, settings)
    candidate = evaluate_candidate(training.path, data, spans)
    production = evaluate_production(options.store, options.alias, data, spans)
    decision = gate(candidate, production, options.thresholds)
    metadata = candidate_metadata(
        options, training, data, spans, identity, candidate, decision, production
    )
    registered = register_candidate(options.store, training.path, metadata)
    image = render_report_image(data, candidate.test, registered.version)
    # The one step that changes production, last but for publishing what happened.
    promotion = promote_if_passed(options, registered.version, decision, production)
    publish_report(
        options, training, spans, registered, candidate, production, decision, promotion, image
    )
    return final_state(registered.version, candidate.test, promotion, image)
