"""The bulk job on a real Apache Flink cluster: `make flink`, then `pytest -m flink`.

A standalone Flink 1.19 session cluster (flink_cluster.py: a JobManager and a TaskManager, each
its own JVM on 127.0.0.1) runs the job the other bulk tests run on the DirectRunner, submitted
by Beam's FlinkRunner through Beam's Flink job server, its Python SDK workers from a worker pool
(`--environment_type EXTERNAL`). The inputs come from the same helpers, and the checks are the
same: every image entry in exactly one of the results and errors files, the counters and the
drift verdict in the summary, the exit status. docs/flink.md shows the same by hand.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from flink_cluster import FlinkCluster, flink_cluster
from servers import ObjectServer, create_bucket, worker_pool
from test_beam_classify import scan_folder
from test_beam_object_storage import assert_accounted_for, read_rows, remote_scans
from test_classify_adversarial import IN_PROCESS, SUMMARY, classify_script, hostile_tree
from test_drift import production  # noqa: F401 (a fixture: the model as v1, with its reference)

from digitflow.listing import path_bytes
from digitflow.scans import write_scans

pytestmark = pytest.mark.flink

BULK = 240  # scans added to the helpers' folders: a few hundred image entries in all
COUNTS = re.compile(r"classified (\d+) \((\d+) low confidence\), errors (\d+)")
POOL_LOG = "worker-pool.log"  # servers.worker_pool's, in the test's folder
DRIFT = re.compile(r"^((?:no drift|drift:).*)$", re.MULTILINE)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlinkCluster]:
    with flink_cluster(tmp_path_factory.mktemp("flink")) as running:
        yield running


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[int]:
    """A worker pool per test, started after the object servers' variables are set: its
    workers, which read and write the store, inherit them."""
    with worker_pool(tmp_path) as port:
        yield port


def bulk_scans(folder: Path, mnist) -> dict[str, int]:
    """BULK more scans (and their labels.csv) in `folder`: path -> label."""
    digits = slice(100, 100 + BULK)
    labels = write_scans(mnist.x_test[digits], mnist.y_test[digits], folder, seed=11)
    with labels.open(newline="") as handle:
        return {str(folder / row["file"]): int(row["label"]) for row in csv.DictReader(handle)}


def summary(stdout: str) -> dict[str, object]:
    """What the job's printed summary says: its counters and its drift line."""
    matched, images, ignored = map(int, SUMMARY.search(stdout).groups())
    classified, low, errors = map(int, COUNTS.search(stdout).groups())
    drift = DRIFT.search(stdout)
    assert drift, stdout
    return {
        "matched": matched,
        "images": images,
        "ignored": ignored,
        "classified": classified,
        "low_confidence": low,
        "errors": errors,
        "drift": drift.group(1),
    }


def ran_on_the_cluster(cluster: FlinkCluster, jobs_before: int, workdir: Path) -> None:
    """One more job finished on the cluster, its Python code run by the pool's workers."""
    jobs = cluster.jobs()
    assert len(jobs) == jobs_before + 1, jobs
    assert jobs[0]["state"] == "FINISHED", jobs
    assert "Starting worker" in (workdir / POOL_LOG).read_text()


@pytest.mark.usefixtures("production")
def test_a_hostile_folder_is_classified_on_flink_as_on_the_direct_runner(
    cluster, pool, mnist, tmp_path
):
    tree = hostile_tree(tmp_path, mnist)  # non-UTF-8 names, unreadable entries, bad images
    truth, failures, others = scan_folder(tree.root / "mixed", mnist)  # formats, awkward names
    truth |= bulk_scans(tree.root / "bulk", mnist)
    results = tree.results | {os.fsencode(path) for path in truth}
    errors = tree.errors | {os.fsencode(path): error for path, error in failures.items()}
    jobs_before = len(cluster.jobs())

    flink = classify_script(tree.root, "-o", tmp_path / "flink/r.csv", *cluster.beam_options(pool))
    direct = classify_script(tree.root, "-o", tmp_path / "direct/r.csv", IN_PROCESS)

    assert flink.returncode == 0, flink.stderr[-3000:]
    assert direct.returncode == 0, direct.stderr[-3000:]
    ran_on_the_cluster(cluster, jobs_before, tmp_path)
    rows = read_rows(str(tmp_path / "flink/r.csv"))
    error_rows = read_rows(str(tmp_path / "flink/r.errors.csv"))
    assert sorted(path_bytes(row["path"]) for row in rows) == sorted(results)  # each once
    assert {path_bytes(row["path"]): row["error"] for row in error_rows} == errors
    assert {row["model_version"] for row in rows} == {"v1"}
    right = sum(int(row["digit"]) == truth[row["path"]] for row in rows if row["path"] in truth)
    assert right >= 0.9 * len(truth)
    on_flink = summary(flink.stdout)
    assert on_flink | {"drift": ""} == {
        "matched": len(results) + len(errors) + tree.ignored + others + 1,  # + bulk labels.csv
        "images": len(results) + len(errors),
        "ignored": tree.ignored + others + 1,
        "classified": len(results),
        "low_confidence": sum(row["low_confidence"] == "true" for row in rows),
        "errors": len(errors),
        "drift": "",
    }
    assert "PSI" in on_flink["drift"]  # checked against the model's reference profile
    # The same rows, counters and drift verdict as the DirectRunner's.
    assert on_flink == summary(direct.stdout)
    by_path = {row["path"]: row for row in read_rows(str(tmp_path / "direct/r.csv"))}
    for row in rows:
        twin = by_path[row["path"]]
        assert (row["digit"], row["model_version"]) == (twin["digit"], twin["model_version"])
        assert float(row["confidence"]) == pytest.approx(float(twin["confidence"]), abs=1e-4)
    assert error_rows == read_rows(str(tmp_path / "direct/r.errors.csv"))


def test_scans_on_s3_are_classified_on_flink_into_s3(
    cluster, object_servers: dict[str, ObjectServer], pool, mnist, trained_model_path, tmp_path
):
    bucket = create_bucket(object_servers["s3"], f"flink-{uuid.uuid4().hex[:12]}")
    folder = tmp_path / "scans"
    bulk = bulk_scans(folder / "bulk", mnist)  # uploaded with the helper's scans
    scans = remote_scans(bucket, mnist, folder, trained_model_path)
    on_s3 = {f"{scans.input}/{Path(p).relative_to(folder)}": label for p, label in bulk.items()}
    scans = dataclasses.replace(scans, truth=scans.truth | on_s3, others=scans.others + 1)
    output = f"{bucket}/out/results.csv"
    jobs_before = len(cluster.jobs())

    done = classify_script(
        scans.input, "-o", output, "--store", scans.store, *cluster.beam_options(pool)
    )

    assert done.returncode == 0, done.stderr[-3000:]
    ran_on_the_cluster(cluster, jobs_before, tmp_path)
    assert_accounted_for(scans, output)  # every image once, classified by v1 from the bucket
    rows = read_rows(output)
    assert summary(done.stdout) == {
        "matched": len(scans.truth) + len(scans.failures) + scans.others,
        "images": len(scans.truth) + len(scans.failures),
        "ignored": scans.others,
        "classified": len(scans.truth),
        "low_confidence": sum(row["low_confidence"] == "true" for row in rows),
        "errors": len(scans.failures),
        "drift": "drift: not checked (the model has no reference profile)",
    }


def test_a_job_that_fails_on_flink_exits_1_and_leaves_no_output(cluster, pool, mnist, tmp_path):
    write_scans(mnist.x_test[:2], mnist.y_test[:2], tmp_path / "scans", seed=1)
    broken = tmp_path / "broken.keras"  # a .keras archive Keras cannot build a model from
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "NoSuchModel", "config": {}}))
    failed_before = cluster.overview()["jobs-failed"]

    done = classify_script(
        tmp_path / "scans", "-o", tmp_path / "out/r.csv", "--model", broken,
        *cluster.beam_options(pool),
    )  # fmt: skip

    assert done.returncode == 1
    assert "the classification job failed" in done.stderr
    assert cluster.overview()["jobs-failed"] == failed_before + 1
    # No results, no errors file, no temp folder. (Flink runs the writers' set-up before the
    # model fails to load, which creates the output's folder; it is left, empty.)
    assert list((tmp_path / "out").rglob("*")) == []
    assert set(os.listdir(tmp_path)) <= {"broken.keras", "digitflow-home", "scans", "out", POOL_LOG}
