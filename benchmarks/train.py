"""Train each architecture/profile on MNIST; print test accuracy, time, size and inference cost.

    .venv/bin/python benchmarks/train.py                # seeds' three models, cnn fast, cnn full
    .venv/bin/python benchmarks/train.py cnn:fast mlp:5 # ARCH:PROFILE, or ARCH:EPOCHS (fast)
    .venv/bin/python benchmarks/train.py cnn:full --seeds 0,1
    .venv/bin/python benchmarks/train.py cnn:fast --seeds 0,1 --set learning_rate=0.01

Prints one markdown table row per run, ready for benchmarks/RESULTS.md. Inference is CPU time
per image (all threads' together) at the bulk job's batch size (256), through LiteRT on one
thread as each Beam worker runs it; multiply-adds are counted from the convolution
and dense layers. `--seeds 0,1` trains each run once per seed; `--set FIELD=VALUE` changes a
`TrainConfig` field (a lever) for every run.
"""

from __future__ import annotations

import argparse
import ast
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

from digitflow.data import load_mnist, model_input
from digitflow.evaluate import evaluate
from digitflow.profiles import PROFILES, TrainConfig, train_config
from digitflow.train import train

# The seeds' three models, as the tutorials trained them (a few epochs), then ours.
DEFAULT_RUNS = ("softmax:5", "mlp:5", "mlp512:5", "cnn:fast", "cnn:full")
BULK_BATCH = 256


def settings_for(run: str, seed: int, changes: dict[str, str]) -> TrainConfig:
    """The run's training config for `seed`, with `changes` (field -> value) applied."""
    architecture, _, what = run.partition(":")
    if what in PROFILES:
        settings = train_config(what, architecture=architecture, seed=seed)
    else:
        settings = train_config("fast", architecture=architecture, epochs=int(what or 2), seed=seed)
    return replace(settings, **{field: _value(text) for field, text in changes.items()})


def _value(text: str) -> object:
    """A --set value as Python reads it (0.006, 18, False, None), else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds per image in the model's convolution and dense layers (the bulk of it)."""
    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D):
            height, width, _ = layer.output.shape[1:]
            total += height * width * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


def inference_cpu_ms(model: keras.Model, images: np.ndarray) -> float:
    """CPU milliseconds per image through LiteRT on one thread, as each worker of the bulk job
    runs a model when the workers share the cores (batches of BULK_BATCH)."""
    from beam_jobs.keras_handler import LiteModel

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "model.tflite")
        model.export(str(path), format="litert", verbose=False)
        return _cpu_ms_per_image(LiteModel(path, threads=1).predict, images)


def keras_cpu_ms(model: keras.Model, images: np.ndarray) -> float:
    """CPU milliseconds per image through Keras' `predict_on_batch`, batches of BULK_BATCH."""
    return _cpu_ms_per_image(model.predict_on_batch, images)


def _cpu_ms_per_image(predict, images: np.ndarray) -> float:
    batches = [images[i : i + BULK_BATCH] for i in range(0, len(images), BULK_BATCH)]
    predict(batches[0])  # build the compiled function, size the tensors
    start = time.process_time()
    for batch in batches:
        predict(batch)
    return (time.process_time() - start) / len(images) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", default=DEFAULT_RUNS, help="ARCH:PROFILE or ARCH:EPOCHS")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument(
        "--keep", type=Path, help="folder to keep each model in, as ARCH-WHAT-SEED.keras"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change a TrainConfig field for every run (a lever): --set learning_rate=0.006",
    )
    args = parser.parse_args()
    mnist = load_mnist()
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, "
        f"{time.strftime('%Y-%m-%d')}, MNIST sha256 {mnist.checksum[:12]}"
        + "".join(f", {change}" for change in args.set)
    )
    columns = ("model", "profile", "seed", "epochs run", "parameters", "multiply-adds")
    columns += ("file size", "train wall time", "test accuracy", "test loss")
    columns += (f"inference CPU per image (batch {BULK_BATCH})",)
    print("| " + " | ".join(columns) + " |")
    print("| --- " * len(columns) + "|")
    for run in args.runs:
        for seed in map(int, args.seeds.split(",")):
            report(run, seed, mnist, args.keep, dict(item.split("=", 1) for item in args.set))


def report(run: str, seed: int, mnist, keep: Path | None, changes: dict[str, str]) -> None:
    """Train one run, print its table row; keep the model under `keep` when given."""
    settings = settings_for(run, seed, changes)
    result = train(mnist, settings, verbose=2)
    evaluation = evaluate(result.model, mnist.x_test, mnist.y_test)
    with tempfile.TemporaryDirectory() as tmp:
        saved = (keep or Path(tmp)) / f"{run.replace(':', '-')}-{seed}.keras"
        saved.parent.mkdir(parents=True, exist_ok=True)
        result.model.save(saved)
        size_kib = saved.stat().st_size / 1024
    cpu_ms = inference_cpu_ms(result.model, model_input(mnist.x_test))
    print(
        f"| {settings.architecture} | {settings.profile} (max {settings.epochs} epochs) | {seed} "
        f"| {result.epochs_run} | {result.model.count_params():,} "
        f"| {multiply_adds(result.model) / 1e6:.1f} M | {size_kib:,.0f} KiB "
        f"| {result.wall_seconds:.0f} s | {evaluation.accuracy:.2%} | {evaluation.loss:.4f} "
        f"| {cpu_ms:.3f} ms |",
        flush=True,
    )


if __name__ == "__main__":
    main()
