"""Seeded, reproducible training of a named architecture on MNIST."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from digitflow.data import Mnist, model_input
from digitflow.models import build_model
from digitflow.profiles import TrainConfig


@dataclass
class TrainResult:
    """A trained model and how it got there."""

    model: keras.Model
    config: TrainConfig
    history: dict[str, list[float]]
    epochs_run: int
    wall_seconds: float
    train_size: int
    validation_size: int


@dataclass(frozen=True)
class EpochReport:
    """One finished epoch, as training progress is reported."""

    epoch: int  # 1-based
    epochs: int  # the most this run may train (early stopping can end it sooner)
    loss: float
    accuracy: float
    val_accuracy: float
    seconds: float

    def line(self) -> str:
        return (
            f"epoch {self.epoch}/{self.epochs}: loss {self.loss:.4f}, "
            f"accuracy {self.accuracy:.4f}, validation accuracy {self.val_accuracy:.4f}, "
            f"{self.seconds:.0f} s"
        )


class _ReportEpochs(keras.callbacks.Callback):
    """Calls `report` with an EpochReport at the end of every epoch."""

    def __init__(self, epochs: int, report: Callable[[EpochReport], None]) -> None:
        super().__init__()
        self.epochs = epochs
        self.report = report
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.report(
            EpochReport(
                epoch=epoch + 1,
                epochs=self.epochs,
                loss=float(logs.get("loss", math.nan)),
                accuracy=float(logs.get("accuracy", math.nan)),
                val_accuracy=float(logs.get("val_accuracy", math.nan)),
                seconds=time.perf_counter() - self.started,
            )
        )


def _augmentation() -> keras.Sequential:
    """A little blur, small rotations, shifts and zooms, as real scans vary (the blur: pens,
    scanners and JPEG soften strokes that MNIST's never are)."""
    return keras.Sequential(
        [
            keras.layers.RandomGaussianBlur(factor=0.5, kernel_size=3, value_range=(0, 1)),
            keras.layers.RandomRotation(15 / 360, fill_mode="constant"),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
            keras.layers.RandomZoom(0.1, fill_mode="constant"),
        ],
        name="augmentation",
    )


def dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int | None, augment: bool = False
) -> tf.data.Dataset:
    """Batches of (model input, label) from uint8 images, shuffled when `seed` is given and
    augmented in the input pipeline when `augment` is set (saved models carry no augmentation)."""
    ds = tf.data.Dataset.from_tensor_slices((model_input(x), y.astype(np.int32)))
    if seed is not None:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment:
        augmentation = _augmentation()
        ds = ds.map(
            lambda images, labels: (augmentation(images[..., None], training=True)[..., 0], labels),
            num_parallel_calls=1,  # in order: the random draws, so the run, stay reproducible
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def _split(data: Mnist, validation_size: int, seed: int):
    """A seeded validation split from the training set (the test set is never used to tune)."""
    size = min(validation_size, len(data.x_train) // 10)
    order = np.random.default_rng(seed).permutation(len(data.x_train))
    val, train = order[:size], order[size:]
    return data.x_train[train], data.y_train[train], data.x_train[val], data.y_train[val]


def train(
    data: Mnist,
    config: TrainConfig,
    verbose: int | str = "auto",
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrainResult:
    """Train `config.architecture` with warm-up + cosine learning rate, early stopping (unless
    `config.patience` is None; the best epoch by validation accuracy is kept either way), and
    augmentation when `config.augment` is set.

    `verbose` is Keras' (1: a progress bar); `on_epoch` is called after every epoch.
    """
    keras.utils.set_random_seed(config.seed)
    x_train, y_train, x_val, y_val = _split(data, config.validation_size, config.seed)
    steps = config.epochs * math.ceil(len(x_train) / config.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 10,
        decay_steps=max(1, steps - steps // 10),
        warmup_target=config.learning_rate,
        warmup_steps=steps // 10,
        alpha=0.01,
    )
    model = build_model(config.architecture)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_accuracy",
            patience=config.epochs if config.patience is None else config.patience,
            restore_best_weights=True,
        ),
    ]
    if on_epoch is not None:
        callbacks.append(_ReportEpochs(config.epochs, on_epoch))
    start = time.perf_counter()
    history = model.fit(
        dataset(x_train, y_train, config.batch_size, config.seed, config.augment),
        validation_data=dataset(x_val, y_val, 1024, None),
        epochs=config.epochs,
        shuffle=False,  # the dataset shuffles itself, seeded
        callbacks=callbacks,
        verbose=verbose,
    )
    return TrainResult(
        model=model,
        config=config,
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
        epochs_run=len(history.epoch),
        wall_seconds=time.perf_counter() - start,
        train_size=len(x_train),
        validation_size=len(x_val),
    )
