"""The model a retrain run judges: trained now, reused from the cache, or not retrained at all.

A run's `identity` hashes what determines the trained model (the data's checksums, the training
config with its seed, the training libraries' versions and digitflow's commit). A registered
version with the same identity is judged again rather than retrained; otherwise the model is
trained into a cache file named by that hash, and reused while the file exists.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from digitflow import config, locations
from digitflow.data import Mnist
from digitflow.profiles import TrainConfig
from flows.artifacts import PROGRESS_KEY
from model_store import ModelStore, ModelVersion
from model_store.metadata import code_version
from model_store.refs import label

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
def registered_candidate(store: str | None, version: int) -> Candidate:
    """The registered version trained on the same data, config and code: not retrained."""
    models = ModelStore(store)
    resolved = models.resolve(version)
    about = f"not retrained: {label(version)} was trained on the same data, config and code"
    return Candidate(str(resolved.local_path), about, models.get(version))


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
    with locations.temporary(output, ".keras") as partial:  # Keras insists on the suffix
        result.model.save(partial)
        locations.commit(partial, output)  # a crash mid-save never leaves a complete-looking file
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


def judged(store: str | None, same: int | None, data: Mnist, settings: TrainConfig) -> Candidate:
    """The version with the run's identity if there is one, else a model trained now (or
    reused from the cache)."""
    if same is not None:
        return registered_candidate(store, same)
    training = train_or_reuse(data, settings)
    return Candidate(training.path, training.line(), training=training)
