"""Train each architecture/profile on MNIST and print test accuracy, wall time, epochs, parameters.

    .venv/bin/python benchmarks/train.py                # seeds' three models, cnn fast, cnn full
    .venv/bin/python benchmarks/train.py cnn:fast mlp:5 # ARCH:PROFILE, or ARCH:EPOCHS (fast)

Prints one markdown table row per run, ready for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from digitflow.data import load_mnist, model_input
from digitflow.evaluate import evaluate
from digitflow.profiles import PROFILES, train_config
from digitflow.train import train

# The seeds' three models, as the tutorials trained them (a few epochs), then ours.
DEFAULT_RUNS = ("softmax:5", "mlp:5", "mlp512:5", "cnn:fast", "cnn:full")


def settings_for(run: str):
    architecture, _, what = run.partition(":")
    if what in PROFILES:
        return train_config(what, architecture=architecture)
    return train_config("fast", architecture=architecture, epochs=int(what or 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", default=DEFAULT_RUNS, help="ARCH:PROFILE or ARCH:EPOCHS")
    parser.add_argument(
        "--keep", type=Path, help="folder to keep each model in, as ARCH-WHAT.keras"
    )
    args = parser.parse_args()
    mnist = load_mnist()
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, "
        f"{time.strftime('%Y-%m-%d')}, MNIST sha256 {mnist.checksum[:12]}"
    )
    columns = ("model", "profile", "epochs run", "parameters", "file size", "train wall time")
    columns += ("test accuracy", "test loss", "inference per image (batch 512)")
    print("| " + " | ".join(columns) + " |")
    print("| --- " * len(columns) + "|")
    for run in args.runs:
        settings = settings_for(run)
        result = train(mnist, settings, verbose=2)
        evaluation = evaluate(result.model, mnist.x_test, mnist.y_test)
        with tempfile.TemporaryDirectory() as tmp:
            saved = (args.keep or Path(tmp)) / f"{run.replace(':', '-')}.keras"
            saved.parent.mkdir(parents=True, exist_ok=True)
            result.model.save(saved)
            size_kib = saved.stat().st_size / 1024
        start = time.perf_counter()
        result.model.predict(model_input(mnist.x_test), batch_size=512, verbose=0)
        per_image_us = (time.perf_counter() - start) / len(mnist.x_test) * 1e6
        print(
            f"| {settings.architecture} | {settings.profile} (max {settings.epochs} epochs) "
            f"| {result.epochs_run} | {result.model.count_params():,} | {size_kib:,.0f} KiB "
            f"| {result.wall_seconds:.0f} s | {evaluation.accuracy:.2%} | {evaluation.loss:.4f} "
            f"| {per_image_us:.0f} µs |",
            flush=True,
        )


if __name__ == "__main__":
    main()
