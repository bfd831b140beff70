"""Bulk classification with input, output and model store on real object-store servers, on the
DirectRunner and on the portable runner path (job service + SDK workers from a worker pool)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import ObjectServer, create_bucket, worker_pool
from test_beam_classify import IN_PROCESS, scan_folder

from beam_jobs.classify import ClassifyError, run
from beam_jobs.options import ClassifyOptions
from digitflow import locations
from model_store import ModelStore

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class RemoteScans:
    """Scans uploaded to a bucket: what each object must become."""

    bucket: str
    truth: dict[str, int]  # image URI -> label
    failures: dict[str, str]  # bad file URI -> its error
    others: int  # objects that are not images

    @property
    def input(self) -> str:
        return f"{self.bucket}/scans"

    @property
    def store(self) -> str:
        return f"{self.bucket}/models"


def upload(folder: Path, prefix: str) -> dict[str, str]:
    """Every file under `folder` as an object under `prefix`: local path -> URI."""
    uris = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        uris[str(path)] = f"{prefix}/{path.relative_to(folder).as_posix()}"
        locations.put(uris[str(path)], path.read_bytes())
    return uris


def remote_scans(bucket: str, mnist, folder: Path, model: Path) -> RemoteScans:
    """The bulk tests' scan folder in `bucket/scans/`, the model as v1 in `bucket/models`."""
    truth, failures, others = scan_folder(folder, mnist)
    uris = upload(folder, f"{bucket}/scans")
    store = ModelStore(f"{bucket}/models")
    store.register(model, {"metrics": {"accuracy": 0.97}})
    store.promote(1, reason="test", actor="test")
    return RemoteScans(
        bucket,
        {uris[path]: label for path, label in truth.items()},
        {uris[path]: error for path, error in failures.items()},
        others,
    )


def content(location: str) -> bytes:
    """A written file's bytes, from a bucket or a local path."""
    if not locations.is_object_uri(location):
        return Path(location).read_bytes()
    found = locations.get(location)
    assert found is not None, f"{location} was not written"
    return found.data


def read_rows(location: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content(location).decode("utf-8"), newline="")))


def assert_accounted_for(scans: RemoteScans, output: str) -> None:
    """Every image once in the results or the errors, classified by v1 from the bucket."""
    rows = read_rows(output)
    errors = read_rows(output.replace(".csv", ".errors.csv"))
    assert sorted(row["path"] for row in rows) == sorted(scans.truth)
    assert {row["path"]: row["error"] for row in errors} == scans.failures
    assert {row["model_version"] for row in rows} == {"v1"}
    right = sum(int(row["digit"]) == scans.truth[row["path"]] for row in rows)
    assert right >= 0.9 * len(rows), rows


def test_bulk_job_reads_and_writes_object_storage(bucket, mnist, trained_model_path, tmp_path):
    scans = remote_scans(bucket, mnist, tmp_path / "scans", trained_model_path)
    # Beam's GCS file system commits output files with the JSON batch API, which
    # fake-gcs-server does not implement: on gs:// the input and store are remote, the output local.
    remote_output = bucket.startswith("s3://")
    output = f"{bucket}/out/results.csv" if remote_output else str(tmp_path / "out/results.csv")
    job = ClassifyOptions(scans.input, output, store=scans.store)

    summary = run(job, [IN_PROCESS])

    assert_accounted_for(scans, output)
    assert (summary.classified, summary.failed, summary.ignored) == (
        len(scans.truth),
        len(scans.failures),
        scans.others,
    )
    assert summary.model_uri == f"{scans.store}/versions/1/model.keras"
    written = content(output)
    with pytest.raises(ClassifyError, match="pass --overwrite"):
        run(job, [IN_PROCESS])
    assert content(output) == written  # refused before anything ran: the file is as it was


@pytest.fixture
def pool_port(tmp_path: Path) -> Iterator[int]:
    with worker_pool(tmp_path) as port:
        yield port


def test_portable_runner_runs_the_job_in_sdk_workers(
    object_servers: dict[str, ObjectServer], pool_port, mnist, trained_model_path, tmp_path
):
    bucket = create_bucket(object_servers["s3"], "portable")
    scans = remote_scans(bucket, mnist, tmp_path / "scans", trained_model_path)
    output = f"{bucket}/out/results.csv"

    portable = [
        "--runner=PortableRunner", "--job_endpoint=embed",
        "--environment_type=EXTERNAL", f"--environment_config=localhost:{pool_port}",
    ]  # fmt: skip

    summary = run(ClassifyOptions(scans.input, output, store=scans.store), portable)

    assert_accounted_for(scans, output)
    assert summary.images == len(scans.truth) + len(scans.failures)
    assert "Starting worker" in (tmp_path / "worker-pool.log").read_text()  # in the pool's
