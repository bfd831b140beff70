"""Named model architectures. Every model takes float32 (28, 28) images in [0, 1], white ink on
black (see `digitflow.preprocess`), and outputs 10 softmax probabilities."""

from __future__ import annotations

import os
from collections.abc import Callable

import keras
from keras import layers

from digitflow.profiles import ARCHITECTURES, check_architecture

INPUT_SHAPE = (28, 28)
NUM_CLASSES = 10
_MAX_REASON = 500  # characters of Keras' own message kept in a ModelLoadError
# Keras' default 0.99 leaves BatchNorm's moving statistics near their initial values after
# the few hundred steps of a short run; 0.9 tracks the data within ~50 steps.
BN_MOMENTUM = 0.9


def softmax() -> keras.Model:
    """Seed 002: multinomial logistic regression."""
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            layers.Flatten(),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ],
        name="softmax",
    )


def mlp() -> keras.Model:
    """Seed 000: two hidden layers of 128."""
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(128, activation="relu"),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ],
        name="mlp",
    )


def mlp512() -> keras.Model:
    """Seed 001: one hidden layer of 512 with dropout 0.2."""
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ],
        name="mlp512",
    )


def _conv(x, filters: int, strides: int = 1):
    """3x3 convolution, BatchNorm, ReLU."""
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    return layers.ReLU()(x)


def cnn() -> keras.Model:
    """Default: four conv-BatchNorm layers, two of them strided (28 -> 14 -> 7), a dense layer
    of 128 and dropout. About 5 M multiply-adds per image: no convolution runs at full
    resolution, and the channels double where the resolution halves."""
    inputs = keras.Input(INPUT_SHAPE)
    x = layers.Reshape((*INPUT_SHAPE, 1))(inputs)
    x = _conv(x, 32, strides=2)
    x = _conv(x, 32)
    x = _conv(x, 64, strides=2)
    x = _conv(x, 64)
    x = layers.Flatten()(x)
    x = layers.Dense(128, use_bias=False)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="cnn")


# Each name in `profiles.ARCHITECTURES` is built by this module's function of that name; a
# name without one fails here, at import.
_BUILDERS: dict[str, Callable[[], keras.Model]] = {name: globals()[name] for name in ARCHITECTURES}


def build_model(architecture: str) -> keras.Model:
    """A fresh, uncompiled model of one of `profiles.ARCHITECTURES`; ValueError for another."""
    check_architecture(architecture)
    return _BUILDERS[architecture]()


class ModelLoadError(ValueError):
    """Keras could not load a model file; the message is one line."""


def load_model(path: str | os.PathLike[str]) -> keras.Model:
    """Load a `.keras` file in Keras' safe mode (no arbitrary code from the file runs).

    The one function every component loads a model with (CLI, model store, Beam workers).
    Raises ModelLoadError, with Keras' reason on one line, for a file Keras cannot load.
    """
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad or unsafe archive
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if len(reason) > _MAX_REASON:
            reason = reason[: _MAX_REASON - 3] + "..."
        raise ModelLoadError(f"Keras could not load the model ({reason})") from exc
