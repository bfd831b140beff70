"""The `retrain` flow: train a candidate, evaluate it next to production, gate, promote, report.

The candidate learns from MNIST plus the train images of the store's active labelled spans
(people's own scans), and is judged on MNIST's test set and on the spans' pooled holdout. Every
task is small and does one thing; the flow composes them. Production changes only in `promote`,
by compare-and-swap against the version the run saw, so a crash anywhere, or a rejected
candidate, leaves it untouched. A rejected candidate stays registered.

Every run decides from what serves now:

- a registered version with the run's `identity` (its data, training config and code) is not
  retrained, unless forced: it is the candidate, judged again under today's thresholds. If it
  is what the alias points to and it passes, the run is `Unchanged`; otherwise it is promoted
  or not, like a new candidate. An alias with no model is never `Unchanged`.
- when the alias's model was trained on a span since retired, the regression rules compare the
  candidate with the best model trained on active data only that has served under the alias
  (none: the floors alone), and every reason says so.

The run ends in a Completed-type state named `Promoted`, `Not promoted` or `Unchanged` (so they
look different in the UI and automations can react to each), or Failed.
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

from digitflow import config, robustness
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
from flows.gate import FLOORS, Baseline, Decision, Scores, decide
from flows.options import RetrainOptions, flat
from model_store import ModelStore, ModelVersion, PromotionConflict
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
from model_store.metadata import build_card, code_version
from model_store.refs import label
from model_store.spans.store import LabelledImages, SpanStore

TRAINING_LIBRARIES = ("digitflow", "keras", "tensorflow")
PROMOTED, NOT_PROMOTED, UNCHANGED = "Promoted", "Not promoted", "Unchanged"
NO_ACTIVE_BASELINE = "no model trained on active data only has served"


class TrainedCandidate(TypedDict):
    """A trained model saved to `path` (never the model object: it crosses a cache boundary).

    Plain JSON in the cache, so a cached result outlives changes to this module.
    """

    path: str
    epochs_run: int
    wall_seconds: float
    best_val_accuracy: float


@dataclass(frozen=True)
class Evidence:
    """What every model in the run is judged on: MNIST's test set (in `data`), the spans'
    pooled holdout and the real-scan robustness suite."""

    data: Mnist
    spans: LabelledImages
    suite: robustness.Suite


@dataclass(frozen=True)
class Serving:
    """What the store holds for this run, read once: the version `alias` points to
    (`production`), the spans it was trained on that are retired now, the version the
    regression rules compare with (`baseline`), and the version with the run's identity (`same`;
    None when there is none or the run is forced)."""

    production: int | None
    retired: tuple[str, ...]
    baseline: int | None
    same: int | None

    @property
    def serves_already(self) -> bool:
        """The version with the run's identity is the one `alias` points to."""
        return self.same is not None and self.same == self.production


@dataclass(frozen=True)
class Candidate:
    """The model the run judges: its file, one line on where it came from, and its version:
    None until the gate has spoken for one trained in this run; set for a version with the
    run's identity, which is judged again, not retrained."""

    path: str
    about: str
    registered: ModelVersion | None = None
    training: Training | None = None  # trained (or reused from the cache) in this run


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
def load_robustness_suite(count: int | None) -> robustness.Suite:
    """The real-scan robustness suite of `count` images (None: its full size), rendered from
    all of MNIST's test digits whatever the run's limits: built once, then from the cache."""
    from digitflow.data import load_mnist

    size = robustness.DEFAULT_COUNT if count is None else count
    suite = robustness.load_suite(load_mnist(), size)
    styles = len(set(suite.styles.tolist()))
    get_run_logger().info("robustness suite: %d images in %d styles", len(suite), styles)
    return suite


@task(cache_policy=NO_CACHE)
def load_spans(store: str | None) -> LabelledImages:
    """The accepted labelled spans in the store: their train images and pooled holdout."""
    images = SpanStore(store).active_images()
    logger = get_run_logger()
    for warning in images.warnings:  # overruled labels, torn spans skipped
        logger.warning("%s", warning)
    logger.info(
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


def same_identity(cards: dict[int, ModelCard], identity: str, production: int | None) -> int | None:
    """The version trained on the same data, config and code: production if it is one, else
    the newest."""
    matching = [number for number, card in cards.items() if card.identity == identity]
    return production if production in matching else max(matching, default=None)


def best_on_active_data(
    cards: dict[int, ModelCard], served: set[int], active: tuple[str, ...]
) -> int | None:
    """Of the versions that have served, the most accurate (as recorded) of those trained on
    active spans only (or none: MNIST alone)."""
    eligible = [
        (card.metrics.accuracy or 0.0, number)
        for number, card in cards.items()
        if number in served and set(card.span_names) <= set(active)
    ]
    return max(eligible, default=(None, None))[1]


@task(cache_policy=NO_CACHE)
def look_up(
    store: str | None, alias: str, identity: str | None, active: tuple[str, ...]
) -> Serving:
    """What serves under `alias`, whether it was trained on retired spans, what the regression
    rules compare with, and the version with `identity` (None: look for none)."""
    models = ModelStore(store)
    cards = {version.version: version.card for version in models.list_versions()}
    production = models.aliases().get(alias)
    card = cards.get(production)
    retired = () if card is None else tuple(n for n in card.span_names if n not in active)
    baseline = production
    if retired:
        served = {entry.to_version for entry in models.history(alias)}
        baseline = best_on_active_data(cards, served, active)
        get_run_logger().warning(retired_line(alias, production, retired))
    same = None if identity is None else same_identity(cards, identity, production)
    return Serving(production, retired, baseline, same)


def retired_line(alias: str, production: int | None, retired: tuple[str, ...]) -> str:
    """`production v3 was trained on retired span S`."""
    spans = f"span {retired[0]}" if len(retired) == 1 else f"spans {', '.join(retired)}"
    return f"{alias} {label(production)} was trained on retired {spans}"


@task(cache_policy=NO_CACHE)
def registered_candidate(store: str | None, version: int) -> Candidate:
    """The registered version trained on the same data, config and code: not retrained."""
    models = ModelStore(store)
    resolved = models.resolve(version)
    about = f"not retrained: {label(version)} was trained on the same data, config and code"
    return Candidate(str(resolved.local_path), about, models.get(version))


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


def _scores_line(scores: Scores) -> str:
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
    get_run_logger().info("candidate: %s", _scores_line(scores))
    return scores


def _comparison(alias: str, serving: Serving) -> tuple[str, str | None]:
    """How the reasons name the baseline, and the rule that chose it when it is not production."""
    if not serving.retired:
        return alias, None
    retired = retired_line(alias, serving.production, serving.retired)
    if serving.baseline is None:
        return alias, retired
    name = label(serving.baseline)
    return name, f"{retired}; compared with {name}, the best model trained on active data only"


@task(cache_policy=NO_CACHE)
def evaluate_baseline(
    store: str | None,
    alias: str,
    serving: Serving,
    evidence: Evidence,
    candidate: Candidate,
    scores: Scores,
) -> Baseline | None:
    """The baseline on the same images (None: `alias` has no model): production, or, when it
    was trained on retired spans, the best model trained on active data only that has served
    (none: the floors alone). A model that no longer loads must not block the nightly."""
    logger, (name, rule) = get_run_logger(), _comparison(alias, serving)
    version = serving.baseline
    if serving.production is None:
        logger.info("no %s model yet", alias)
        return None
    if version is None:
        return Baseline(name, None, None, NO_ACTIVE_BASELINE, rule)
    if candidate.registered is not None and candidate.registered.version == version:
        return Baseline(name, version, scores, rule=rule)  # the same model: the same scores
    what = f"{alias} {label(version)}" if name == alias else name
    try:
        theirs = score(ModelStore(store).load_model(version), evidence)
    except Exception as error:  # whatever broke it, the candidate is judged on the floors
        problem = f"{what} cannot be evaluated: {_one_line(error)}"
        logger.warning(problem)
        return Baseline(name, version, None, problem, rule)
    logger.info("%s: %s", what, _scores_line(theirs))
    return Baseline(name, version, theirs, rule=rule)


gate = task(decide, name="gate", cache_policy=NO_CACHE)


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
    options: RetrainOptions, version: int, decision: Decision, expected: int | None
) -> Promotion:
    """Promote a candidate that passed the gate, by compare-and-swap against `expected`, the
    version `alias` pointed to when the run looked."""
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


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def judged(store: str | None, same: int | None, data: Mnist, settings: TrainConfig) -> Candidate:
    """The version with the run's identity if there is one, else a model trained now (or
    reused from the cache)."""
    if same is not None:
        return registered_candidate(store, same)
    training = train_or_reuse(data, settings)
    return Candidate(training.path, training.line(), training=training)


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
    evidence = Evidence(data, spans, load_robustness_suite(options.robustness_images))
    identity = run_identity(data, settings)
    looked_for = None if options.force else identity
    serving = look_up(options.store, options.alias, looked_for, spans.spans)
    candidate = judged(options.store, serving.same, data, settings)
    scores = evaluate_candidate(candidate.path, evidence)
    baseline = evaluate_baseline(options.store, options.alias, serving, evidence, candidate, scores)
    decision = gate(scores, baseline, options.thresholds)
    if decision.promote and serving.serves_already:
        return unchanged(options.alias, serving.same, decision)
    registered = candidate.registered
    if candidate.training is not None:
        card = candidate_card(
            options, candidate.training, data, spans, identity, scores, baseline, decision
        )
        registered = register_candidate(options.store, candidate.path, card)
    image = render_report_image(data, scores.test, registered.version)
    # The one step that changes production, last but for publishing what happened.
    promotion = promote_if_passed(options, registered.version, decision, serving.production)
    publish_report(
        options, candidate, spans, registered, scores, baseline, decision, promotion, image
    )
    subject = f"candidate {label(registered.version)}"
    if candidate.training is None:
        subject += " (trained before on the same data and config)"
    return final_state(subject, registered.version, scores.test, promotion, image)
