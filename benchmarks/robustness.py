"""Accuracy per kind of real-world digit image: the seeds' preprocessing vs ours, same model.

    .venv/bin/python benchmarks/robustness.py [--model REF] [--count 1000] [--kinds TEXT]

Each kind is a style of the robustness suite the promotion gate scores (`digitflow.robustness`),
applied to MNIST test digits (never seen in training) and encoded as a real file, then decoded by
each preprocessing. REF is a model-store reference (default `production`) or a path to a .keras
file. Prints a markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from PIL import Image

from digitflow.data import load_mnist
from digitflow.models import load_model
from digitflow.preprocess import PreprocessError, to_mnist
from digitflow.robustness import STYLES
from model_store import ModelStore


def seeds_preprocess(data: bytes) -> np.ndarray:
    """The tutorials' way: greyscale, squash to 28x28, invert."""
    image = Image.open(io.BytesIO(data)).convert("L").resize((28, 28))
    return (255 - np.asarray(image, np.float32)) / 255.0


def ours(data: bytes) -> np.ndarray:
    try:
        return to_mnist(data)
    except PreprocessError:  # counted as wrong: an all-black input predicts nothing useful
        return np.zeros((28, 28), np.float32)


def accuracy(model, inputs: list[np.ndarray], labels: np.ndarray) -> float:
    probabilities = model.predict(np.stack(inputs), batch_size=512, verbose=0)
    return float((probabilities.argmax(axis=1) == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="production", help="store reference or .keras path")
    parser.add_argument("--count", type=int, default=1000, help="test digits per kind")
    parser.add_argument("--kinds", default="", help="only kinds whose name contains this text")
    args = parser.parse_args()

    resolved = ModelStore().resolve(args.model)
    model = load_model(resolved.local_path)
    mnist = load_mnist()
    digits, labels = mnist.x_test[: args.count], mnist.y_test[: args.count]
    clean = accuracy(model, [d / 255.0 for d in digits], labels)
    print(f"model {resolved.uri} (version {resolved.version}), {args.count} test digits per kind")
    print(f"MNIST test digits as arrays (reference): {clean:.2%}\n")
    print("| kind | seeds' preprocessing | digitflow preprocessing | gap to reference |")
    print("| --- | --- | --- | --- |")
    for name, make in STYLES.items():
        if args.kinds not in name:
            continue
        rng = np.random.default_rng(0)
        files = [make(d, rng) for d in digits]
        seeds = accuracy(model, [seeds_preprocess(f) for f in files], labels)
        ours_accuracy = accuracy(model, [ours(f) for f in files], labels)
        print(
            f"| {name} | {seeds:.1%} | {ours_accuracy:.1%} | {ours_accuracy - clean:+.1%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
