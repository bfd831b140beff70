"""Bulk classification speed: the seeds' one-predict-per-image loop vs the Beam pipeline.

    .venv/bin/python benchmarks/bulk_classify.py [--count 10000] [--sample 200] [--model REF]
        [--modes multi_processing,in_memory] [--scans DIR]

Renders COUNT scan-like images from MNIST digits (mixed formats and pixel modes, 1,000 per
sub-folder), runs the seeds' loop (resize + invert, one `model.predict` per image) on the first
SAMPLE of them, then the pipeline on all of them in each DirectRunner mode, each in its own
process. Prints wall seconds (a pipeline's from its launch to its end, workers' start-up
included), images/s, accuracy against the labels, the ratio to the seeds' loop and peak RSS
(the launcher's, the largest worker's, and all processes' summed, sampled from /proc: Linux)
as a markdown table for benchmarks/RESULTS.md.
REF is a model-store reference (default `production`) or a .keras file. With --scans DIR, scans
already rendered there are reused.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from digitflow.data import load_mnist
from digitflow.scans import write_scans

FOLDER_SIZE = 1_000


def render(scans: Path, count: int) -> dict[str, int]:
    """Write `count` scans under `scans/part-NNN/` (reusing complete folders); path -> label."""
    mnist = load_mnist()
    images = np.concatenate([mnist.x_test, mnist.x_train])
    labels = np.concatenate([mnist.y_test, mnist.y_train])
    starts = range(0, count, FOLDER_SIZE)
    todo = [
        start
        for start in starts
        if not (scans / f"part-{start // FOLDER_SIZE:03d}" / "labels.csv").is_file()
    ]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        jobs = []
        for start in todo:
            picks = np.arange(start, min(start + FOLDER_SIZE, count)) % len(images)
            folder = scans / f"part-{start // FOLDER_SIZE:03d}"
            jobs.append(pool.submit(write_scans, images[picks], labels[picks], folder, start))
        for job in jobs:
            job.result()
    truth = {}
    for start in starts:
        folder = scans / f"part-{start // FOLDER_SIZE:03d}"
        with (folder / "labels.csv").open(newline="") as handle:
            for row in csv.DictReader(handle):
                truth[str(folder / row["file"])] = int(row["label"])
    return truth


def seed_loop(model_path: Path, truth: dict[str, int], sample: int) -> dict[str, float]:
    """The seeds' way: per image, resize to 28x28, invert, one `model.predict` call."""
    from digitflow.models import load_model

    model = load_model(model_path)
    paths = sorted(truth)[:sample]
    model.predict(np.zeros((1, 28, 28), np.float32), verbose=0)  # build the predict function
    right = 0
    start = time.perf_counter()
    for path in paths:
        gray = Image.open(path).convert("L").resize((28, 28))
        x = (255.0 - np.asarray(gray, np.float32)) / 255.0
        digit = int(np.argmax(model.predict(x[None], verbose=0)[0]))
        right += digit == truth[path]
    elapsed = time.perf_counter() - start
    return {"images": len(paths), "seconds": elapsed, "accuracy": right / len(paths)}


def pipeline(mode: str, scans: Path, model: str, output: Path) -> dict:
    """Run the pipeline in a fresh process; its summary, peak RSS and accuracy inputs."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(scans), model, str(output)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"pipeline ({mode}) failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(mode: str, scans: str, model: str, output: str) -> None:
    """In the fresh process: run the job, print one JSON line with its figures."""
    from beam_jobs.classify import run

    sampler = RssSampler()
    sampler.start()
    summary = run(
        ["--input", scans, "--output", output, "--model", model, f"--direct_running_mode={mode}"]
    )
    sampler.stop()
    figures = {
        **summary.to_dict(),
        "launcher_mib": _status_kib(os.getpid(), "VmHWM") / 1024,
        "worker_mib": sampler.worker_peak / 1024,
        "total_mib": sampler.total_peak / 1024,
    }
    print(json.dumps(figures))


class RssSampler(threading.Thread):
    """Peak RSS of this process's descendants (the runner's workers), sampled from /proc."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.worker_peak = 0  # KiB, largest single worker
        self.total_peak = 0  # KiB, this process and all its descendants together
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            me = os.getpid()
            workers = [_status_kib(pid, "VmRSS") for pid in _descendants(me)]
            self.worker_peak = max(self.worker_peak, *workers, 0)
            self.total_peak = max(self.total_peak, _status_kib(me, "VmRSS") + sum(workers))

    def stop(self) -> None:
        self._done.set()
        self.join()


def _descendants(root: int) -> list[int]:
    parents = {}
    for entry in os.scandir("/proc"):
        try:
            stat = Path(entry.path, "stat").read_text() if entry.name.isdigit() else ""
        except OSError:  # the process has just ended
            continue
        if stat:
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _status_kib(pid: int, field: str) -> int:
    """A memory figure (VmRSS, VmHWM) from /proc/PID/status, in KiB; 0 once it has ended."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith(f"{field}:")), 0)


def accuracy(results: Path, truth: dict[str, int]) -> float:
    with results.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    right = sum(int(row["digit"]) == truth[row["path"]] for row in rows)
    return right / len(truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="Images for the pipeline.")
    parser.add_argument("--sample", type=int, default=200, help="Images for the seeds' loop.")
    parser.add_argument("--model", default="production", help="Store reference or .keras file.")
    parser.add_argument(
        "--modes", default="multi_processing,in_memory", help="DirectRunner modes to run."
    )
    parser.add_argument("--scans", type=Path, help="Render into / reuse scans from this folder.")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    from model_store import ModelStore

    model_path = ModelStore().resolve(args.model).local_path
    with tempfile.TemporaryDirectory(prefix="bulk-classify-") as tmp:
        scans = (args.scans or Path(tmp) / "scans").absolute()
        started = time.perf_counter()
        truth = render(scans, args.count)
        print(f"# {len(truth):,} scans in {scans} ({time.perf_counter() - started:.0f} s)")
        seeds = seed_loop(model_path, truth, args.sample)
        seed_rate = seeds["images"] / seeds["seconds"]
        print(
            f"# {platform.node()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, "
            f"model {model_path}"
        )
        print(
            "| method | images | seconds | images/s | vs seeds | accuracy "
            "| peak RSS: launcher / worker / all (MiB) |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        print(
            f"| seeds' loop (resize + invert, predict per image) | {seeds['images']:,} "
            f"| {seeds['seconds']:.1f} | {seed_rate:,.1f} | 1x | {seeds['accuracy']:.1%} | - |"
        )
        for mode in args.modes.split(","):
            output = Path(tmp) / f"results-{mode}.csv"
            figures = pipeline(mode, scans, str(model_path), output)
            rate = figures["images_per_s"]
            print(
                f"| pipeline, DirectRunner {mode} | {figures['images']:,} "
                f"| {figures['elapsed_s']:.1f} | {rate:,.1f} "
                f"| {rate / seed_rate:,.0f}x | {accuracy(output, truth):.1%} "
                f"| {figures['launcher_mib']:,.0f} / {figures['worker_mib']:,.0f} "
                f"/ {figures['total_mib']:,.0f} |"
            )


if __name__ == "__main__":
    main()
