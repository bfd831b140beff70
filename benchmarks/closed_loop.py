"""Own-scans holdout accuracy before and after the nightly learns from reviewed scans.

    .venv/bin/python benchmarks/closed_loop.py [--kind "thin pen"] [--count 600] [--profile fast]

Renders COUNT scans of one KIND from `benchmarks/robustness.py` (a style MNIST lacks) from MNIST
*train* digits, labelled as a reviewer would, into a fresh store; runs the `retrain` flow once
on MNIST alone (v1, promoted), adds the scans with `SpanStore.add` (as `digitflow data add`
does), and runs the flow again: v2 trains on MNIST plus the span's train split and both models
are scored on the span's holdout. Prints a markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from robustness import KINDS

from digitflow import config
from digitflow.data import load_mnist


def render(kind: str, count: int, folder: Path) -> Path:
    """COUNT files of KIND from MNIST train digits and their `path,label` CSV."""
    mnist = load_mnist()
    rng = np.random.default_rng(0)
    picks = rng.choice(len(mnist.x_train), count, replace=False)
    folder.mkdir(parents=True)
    rows = []
    for index in picks:
        path = folder / f"{kind.replace(' ', '-')}-{index:05d}.png"
        path.write_bytes(KINDS[kind](mnist.x_train[index], rng))
        rows.append((str(path), int(mnist.y_train[index])))
    labels = folder / "labels.csv"
    with labels.open("w", newline="") as handle:
        csv.writer(handle).writerows([("path", "label"), *rows])
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="thin pen", choices=sorted(KINDS))
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--profile", default="fast")
    args = parser.parse_args()

    mnist_cache = config.data_dir()  # shared with the fresh home below
    with tempfile.TemporaryDirectory(prefix="closed-loop-") as tmp:
        os.environ["DIGITFLOW_HOME"] = str(Path(tmp) / "home")  # a fresh store
        (Path(tmp) / "home").mkdir()
        (Path(tmp) / "home" / "data").symlink_to(mnist_cache)
        from flows.retrain import retrain
        from model_store import ModelStore
        from model_store.spans.store import SpanStore

        labels = render(args.kind, args.count, Path(tmp) / "scans")
        started = time.perf_counter()
        first = retrain(profile=args.profile, return_state=True)
        added = SpanStore().add(labels, name="reviewed")
        second = retrain(profile=args.profile, return_state=True)
        elapsed = time.perf_counter() - started
        v1, v2 = (ModelStore().get(version).metadata for version in (1, 2))
    holdout = v2["holdout"]
    print(
        f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, profile {args.profile}, "
        f"{elapsed / 60:.0f} min for both runs; span: {added.span.splits} ({args.kind})"
    )
    print(f"# v1: {first.name}; v2: {second.name} ({second.message})")
    print("| model | trained on | MNIST test | own-scans holdout |")
    print("|---|---|---:|---:|")
    before, after = holdout["production"], holdout["candidate"]
    print(f"| v1 | MNIST | {v1['metrics']['accuracy']:.4f} | {before['accuracy']:.4f} |")
    print(
        f"| v2 | MNIST + {added.span.splits['train']} reviewed scans | "
        f"{v2['metrics']['accuracy']:.4f} | {after['accuracy']:.4f} (n={after['count']}) |"
    )


if __name__ == "__main__":
    main()
