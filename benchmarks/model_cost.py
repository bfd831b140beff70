"""Cost per image of each architecture, in one run: multiply-adds, inference and training CPU.

    .venv/bin/python benchmarks/model_cost.py [--images 4096]

Random inputs (cost does not depend on the values). Inference at the bulk job's batch size
(256): Keras' `predict_on_batch`, and LiteRT on one thread, as the Beam workers run it.
Training: `fit` at the profiles' batch size (128), without and with the `full` profile's
augmentation in the input pipeline. CPU time is all threads' together (`time.process_time`).
`cnn-round1` is the first round's CNN (two blocks of two 3x3 convolutions with max pooling), kept
here as the reference. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np
from keras import layers
from train import BULK_BATCH, inference_cpu_ms, keras_cpu_ms, multiply_adds

from digitflow import train as training
from digitflow.models import BN_MOMENTUM, build_model
from digitflow.profiles import ARCHITECTURES

TRAIN_BATCH = 128


def cnn_round1() -> keras.Model:
    """The first round's CNN, without its augmentation layers (augmentation is timed apart)."""
    inputs = keras.Input((28, 28))
    x = layers.Reshape((28, 28, 1))(inputs)
    for filters in (32, 64):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, use_bias=False)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(0.4)(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x), name="cnn-round1")


def training_cpu_ms(model: keras.Model, images: np.ndarray, augment: bool) -> float:
    """CPU milliseconds per image of one epoch of `fit` over `images` (random labels)."""
    labels = np.random.default_rng(0).integers(0, 10, len(images))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    data = training.dataset(images, labels, TRAIN_BATCH, seed=None, augment=augment)
    model.fit(data.take(3), verbose=0)  # build and compile the train step
    start = time.process_time()
    model.fit(data, verbose=0)
    return (time.process_time() - start) / len(images) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096, help="images per measurement")
    args = parser.parse_args()
    pixels = np.random.default_rng(0).integers(0, 256, (args.images, 28, 28), np.uint8)
    inputs = pixels.astype(np.float32) / 255.0
    print(
        f"| model | multiply-adds | inference CPU per image (batch {BULK_BATCH}): Keras "
        "| the same, LiteRT (the bulk job's runtime) "
        f"| training CPU per image (batch {TRAIN_BATCH}) | the same, augmented |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    builders = {"cnn-round1": cnn_round1} | {a: lambda a=a: build_model(a) for a in ARCHITECTURES}
    for name, build in builders.items():
        model = build()
        print(
            f"| {name} | {multiply_adds(model) / 1e6:.2f} M "
            f"| {keras_cpu_ms(model, inputs):.3f} ms "
            f"| {inference_cpu_ms(model, inputs):.3f} ms "
            f"| {training_cpu_ms(build(), pixels, augment=False):.3f} ms "
            f"| {training_cpu_ms(build(), pixels, augment=True):.3f} ms |",
            flush=True,
        )


if __name__ == "__main__":
    main()
