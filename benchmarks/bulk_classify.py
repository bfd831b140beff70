"""Bulk classification speed: the seeds' loop, a plain process pool, and the Beam pipeline.

    .venv/bin/python benchmarks/bulk_classify.py [--count 10000] [--sample 200] [--model REF]
        [--modes multi_processing,in_memory] [--scans DIR] [--repeat 1]

Renders COUNT scan-like images from MNIST digits (mixed formats and pixel modes, 1,000 per
sub-folder) and reads them all once (so every timed run finds them in the page cache), runs the
seeds' loop (resize + invert, one `model.predict` per image) on the first SAMPLE of them, then,
on all of them, REPEAT rounds of: the plain-pool anchor and the pipeline in each DirectRunner
mode, each in its own process (odd rounds run the anchor first, even rounds last).

The anchor is what one would write instead of a Beam job: a `multiprocessing.Pool` of one
process per core, each with one LiteRT interpreter on the pipeline's own flatbuffer (the
model's cached conversion, one thread per process as the pipeline's workers get), fed batches
of the pipeline's batch size: list the files (`digitflow.listing.walk`), read each, `to_mnist`,
one `invoke` per batch, one CSV of path,digit,confidence.

Prints the host's CPU and its avx2 / avx512f / avx512_bf16 flags, then a markdown table for
benchmarks/RESULTS.md: wall seconds (an anchor's or a pipeline's from its start in its process,
the process's own imports excluded, its workers' start-up and model load and the output's last
write included), images/s, the ratio to the seeds' loop, the ratio to the anchor of the same
round, accuracy against the labels, and peak RSS (the launcher's, the largest worker's, and all
processes' summed, sampled from /proc: Linux). With REPEAT > 1, each mode's pipeline/anchor
ratios per round and their median follow the table.
REF is a model-store reference (default `production`) or a .keras file. With --scans DIR, scans
already rendered there are reused.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
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


def measure(kind: str, scans: Path, model: str, output: Path, batch: int) -> dict:
    """Run the anchor or a pipeline mode in a fresh process; its figures (one JSON line)."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(scans), model, str(output), str(batch)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(kind: str, scans: str, model: str, output: str, batch: str) -> None:
    """In the fresh process: run the anchor or the job, print one JSON line with its figures."""
    sampler = RssSampler()
    if kind == "anchor":
        sampler.start()
        figures = anchor(scans, model, output, int(batch))
    else:
        from beam_jobs.classify import main as run

        argv = ["--input", scans, "--output", output, "--model", model, "--batch_size", batch]
        sampler.start()
        figures = run([*argv, f"--direct_running_mode={kind}"]).to_dict()
    sampler.stop()
    figures |= {
        "launcher_mib": _status_kib(os.getpid(), "VmHWM") / 1024,
        "worker_mib": sampler.worker_peak / 1024,
        "total_mib": sampler.total_peak / 1024,
    }
    print(json.dumps(figures, default=str))


def anchor(scans: str, flatbuffer: str, output: str, batch: int) -> dict[str, float]:
    """The plain-pool anchor: the pipeline's work without Beam, timed from its start (pool
    start-up and model load included) to the results file closed."""
    from multiprocessing import Pool

    from digitflow.listing import Kind, walk

    start = time.monotonic()
    paths = [entry.path for entry in walk(scans) if entry.kind is Kind.IMAGE]
    batches = [paths[i : i + batch] for i in range(0, len(paths), batch)]
    classified = failed = 0
    with (
        Pool(os.cpu_count(), _load_interpreter, (flatbuffer,)) as pool,
        open(output, "w", newline="") as handle,
    ):
        writer = csv.writer(handle)
        writer.writerow(("path", "digit", "confidence"))
        for rows, errors in pool.imap_unordered(_classify_batch, batches):
            writer.writerows(rows)
            classified += len(rows)
            failed += errors
    elapsed = time.monotonic() - start
    images = classified + failed
    return {"images": images, "elapsed_s": elapsed, "images_per_s": images / elapsed}


_interpreter = None  # a pool process's LiteRT interpreter, sized for the last batch's shape


def _load_interpreter(flatbuffer: str) -> None:
    """One thread, as each of the pipeline's workers gets (cores // workers)."""
    global _interpreter
    from ai_edge_litert.interpreter import Interpreter

    _interpreter = Interpreter(model_path=flatbuffer, num_threads=1)
    _interpreter.allocate_tensors()


def _classify_batch(paths: list[str]) -> tuple[list[tuple[str, int, str]], int]:
    """Read, preprocess and classify one batch: its (path, digit, confidence) rows, failures."""
    from digitflow.listing import UnreadableError, read_file
    from digitflow.preprocess import PreprocessError, to_mnist

    images, kept = [], []
    for path in paths:
        try:
            images.append(to_mnist(read_file(path)))
            kept.append(path)
        except (PreprocessError, UnreadableError):
            pass
    if not images:
        return [], len(paths)
    x = np.stack(images)
    source = _interpreter.get_input_details()[0]
    if tuple(source["shape"]) != x.shape:
        _interpreter.resize_tensor_input(source["index"], x.shape, strict=False)
        _interpreter.allocate_tensors()
    _interpreter.set_tensor(source["index"], x)
    _interpreter.invoke()
    probabilities = _interpreter.get_tensor(_interpreter.get_output_details()[0]["index"])
    digits = probabilities.argmax(axis=1)
    rows = [
        (path, int(digit), f"{p[digit]:.6f}")
        for path, digit, p in zip(kept, digits, probabilities, strict=True)
    ]
    return rows, len(paths) - len(kept)


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


def cpu_line() -> str:
    """The host's CPU model and whether it has the flags that move these figures."""
    fields = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())  # the first core's
    flags = set(fields.get("flags", "").split())
    have = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in CPU_FLAGS)
    return f"# CPU: {fields.get('model name', '?')}; {have}"


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16")


def row(method: str, figures: dict, seed_rate: float, anchor_rate: float, right: float) -> str:
    rate = figures["images_per_s"]
    return (
        f"| {method} | {figures['images']:,} | {figures['elapsed_s']:.1f} | {rate:,.1f} "
        f"| {rate / seed_rate:,.0f}x | {rate / anchor_rate:.2f}x | {right:.1%} "
        f"| {figures['launcher_mib']:,.0f} / {figures['worker_mib']:,.0f} "
        f"/ {figures['total_mib']:,.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="Images for the pipeline.")
    parser.add_argument("--sample", type=int, default=200, help="Images for the seeds' loop.")
    parser.add_argument("--model", default="production", help="Store reference or .keras file.")
    parser.add_argument(
        "--modes", default="multi_processing,in_memory", help="DirectRunner modes to run."
    )
    parser.add_argument("--scans", type=Path, help="Render into / reuse scans from this folder.")
    parser.add_argument(
        "--repeat", type=int, default=1, help="Rounds of the anchor and each mode, interleaved."
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    from beam_jobs.keras_handler import litert_file
    from beam_jobs.options import DEFAULT_BATCH_SIZE
    from model_store import ModelStore

    model = ModelStore().resolve(args.model)
    modes = args.modes.split(",")
    with (
        tempfile.TemporaryDirectory(prefix="bulk-classify-") as tmp,
        litert_file(model.local_path, model.sha256) as flatbuffer,  # converted once, untimed
    ):
        scans = (args.scans or Path(tmp) / "scans").absolute()
        started = time.perf_counter()
        truth = render(scans, args.count)
        size = sum(len(Path(path).read_bytes()) for path in truth)  # into the page cache
        print(
            f"# {len(truth):,} scans in {scans} ({size / 2**20:,.0f} MiB, "
            f"{time.perf_counter() - started:.0f} s to render and read)"
        )
        seeds = seed_loop(model.local_path, truth, args.sample)
        seed_rate = seeds["images"] / seeds["seconds"]
        print(
            f"# {platform.node()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}, "
            f"model {model.local_path}, batch {DEFAULT_BATCH_SIZE}"
        )
        print(cpu_line())
        print(
            "| method | images | seconds | images/s | vs seeds | vs anchor | accuracy "
            "| peak RSS: launcher / worker / all (MiB) |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        print(
            f"| seeds' loop (resize + invert, predict per image) | {seeds['images']:,} "
            f"| {seeds['seconds']:.1f} | {seed_rate:,.1f} | 1x | - | {seeds['accuracy']:.1%} | - |"
        )
        ratios: dict[str, list[float]] = {mode: [] for mode in modes}
        for index in range(args.repeat):
            kinds = ["anchor", *modes] if index % 2 == 0 else [*modes, "anchor"]
            figures, right = {}, {}
            for kind in kinds:
                output = Path(tmp) / f"results-{kind}-{index}.csv"
                model_file = str(flatbuffer if kind == "anchor" else model.local_path)
                figures[kind] = measure(kind, scans, model_file, output, DEFAULT_BATCH_SIZE)
                right[kind] = accuracy(output, truth)
            suffix = f", round {index + 1}" if args.repeat > 1 else ""
            anchor_rate = figures["anchor"]["images_per_s"]
            for kind in kinds:
                method = (
                    f"plain-pool anchor ({os.cpu_count()} processes){suffix}"
                    if kind == "anchor"
                    else f"pipeline, DirectRunner {kind}{suffix}"
                )
                print(row(method, figures[kind], seed_rate, anchor_rate, right[kind]))
                if kind != "anchor":
                    ratios[kind].append(figures[kind]["images_per_s"] / anchor_rate)
        if args.repeat > 1:
            for mode, values in ratios.items():
                listed = ", ".join(f"{value:.2f}" for value in values)
                print(
                    f"# pipeline {mode} / anchor, per round: {listed} "
                    f"(median {statistics.median(values):.2f})"
                )


if __name__ == "__main__":
    main()
