"""Prefect on PostgreSQL, as infra/ runs it: a real PostgreSQL (the Debian package) in a temporary
directory, `prefect server start` on it through postgresql+asyncpg, a retrain and a bulk
classification through the `digitflow` CLI, then their runs and artifacts read over the API and
found in PostgreSQL's own tables. Everything started here is stopped here."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from servers import free_port
from test_e2e_prefect import (
    BIN,
    REPO,
    Server,
    api_client,
    artifacts_by_key,
    healthy,
    started,
    wait_for,
)

from flows.artifacts import REPORT_KEY
from flows.classify_folder import SUMMARY_KEY

pytestmark = pytest.mark.slow

POSTGRES_ROOT = Path("/usr/lib/postgresql")
DATABASE = "prefect"  # the role and database names infra/ uses
SCANS = 20


def run_checked(command: list[str], env: dict[str, str] | None = None) -> str:
    """Run `command`; its stdout, or fail the test with everything it printed."""
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


@dataclass(frozen=True)
class Postgres:
    """One PostgreSQL cluster: data, unix socket and log under `root`, TCP on 127.0.0.1:port."""

    bin_dir: Path
    root: Path
    port: int
    password: str
    as_owner: tuple[str, ...]  # how to run the server's tools as a non-root user

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        """Prefect's connection URL, as in infra/: the `prefect` role over TCP with a password."""
        return f"postgresql+asyncpg://{DATABASE}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def tool(self, name: str, *args: str) -> str:
        """Run one of PostgreSQL's server tools as the cluster's owner."""
        return run_checked([*self.as_owner, str(self.bin_dir / name), *args])

    def sql(self, query: str, database: str = "postgres") -> list[list[str]]:
        """Rows of `query`, run as the superuser over the unix socket."""
        out = run_checked(
            [
                str(self.bin_dir / "psql"),
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-F",
                "\t",
                "-h",
                str(self.root),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                query,
            ]
        )
        return [line.split("\t") for line in out.splitlines()]

    def start(self) -> None:
        """initdb (local trust, TCP by scram password), start, create the `prefect` database."""
        self.tool(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
            )
        try:
            self.tool("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w")
        except AssertionError as error:
            pytest.fail(f"{error}\n{self.log}:\n{self.log.read_text()[-3000:]}")
        self.sql(f"CREATE ROLE {DATABASE} LOGIN PASSWORD '{self.password}'")
        self.sql(f"CREATE DATABASE {DATABASE} OWNER {DATABASE}")

    def stop(self) -> None:
        """Stop the server, if it runs (`fast`: active sessions are ended)."""
        subprocess.run(
            [
                *self.as_owner,
                str(self.bin_dir / "pg_ctl"),
                "stop",
                "-D",
                str(self.data),
                "-m",
                "fast",
                "-w",
            ],
            capture_output=True,
        )


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian: /usr/lib/postgresql/MAJOR/bin)."""
    found = sorted(POSTGRES_ROOT.glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        pytest.skip(f"no PostgreSQL: no {POSTGRES_ROOT}/*/bin/initdb (run `make postgres`)")
    return found[-1].parent


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """A fresh PostgreSQL on a free port; as root, its tools run as the `postgres` user.

    Not under pytest's tmp_path: that is private to the test's user (0700), and PostgreSQL
    refuses to run as root.
    """
    bin_dir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="digitflow-pg-"))
    as_owner: tuple[str, ...] = ()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_owner = ("runuser", "-u", "postgres", "--")
    db = Postgres(bin_dir, root, free_port(), secrets.token_urlsafe(16), as_owner)
    try:
        db.start()
        yield db
    finally:
        db.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def server_on_postgres(postgres: Postgres, tmp_path: Path) -> Iterator[Server]:
    """`prefect server start` with only PREFECT_SERVER_DATABASE_CONNECTION_URL set for it."""
    port = free_port()
    server = Server(f"http://127.0.0.1:{port}", tmp_path / "prefect-home" / "server.log")
    server.log.parent.mkdir()
    env = {**server.env(), "PREFECT_SERVER_DATABASE_CONNECTION_URL": postgres.url}
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with started(command, env, server.log):
        wait_for(lambda: healthy(server.url), "healthy server", 180, server.log)
        yield server


@pytest.fixture
def client(server_on_postgres: Server) -> Iterator[Any]:
    """A Prefect API client of that server."""
    with api_client(server_on_postgres) as api:
        yield api


def only_run_of(client: Any, flow_name: str) -> Any:
    """The one flow run of the flow `flow_name` on the server."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
    assert len(runs) == 1, [run.name for run in runs]
    return runs[0]


def test_retrain_and_bulk_runs_are_kept_in_postgresql(
    postgres: Postgres, server_on_postgres: Server, client: Any, tmp_path: Path
):
    env, digitflow = server_on_postgres.env(), str(BIN / "digitflow")
    scans, results = tmp_path / "scans", tmp_path / "out" / "predictions.csv"
    quick = ["--arch=mlp", "--epochs=1", "--train-limit=3000", "--test-limit=1000"]  # e2e's QUICK
    floors = ["--min-accuracy=0.5", "--min-digit-recall=0.3"]
    for command in (
        [digitflow, "retrain", *quick, *floors],
        [digitflow, "data", "scans", str(scans), f"--count={SCANS}"],
        [digitflow, "classify", str(scans), "--output", str(results), "--prefect"],
    ):
        run_checked(command, env)

    retrain, bulk = only_run_of(client, "retrain"), only_run_of(client, "classify-folder")
    assert retrain.state.name == "Promoted", retrain.state.message
    report = artifacts_by_key(client, retrain.id)[REPORT_KEY].data
    assert "# Retrain: v1 PROMOTED" in report
    assert "](data:image/png;base64," in report
    assert bulk.state.is_completed(), bulk.state.message
    summary = artifacts_by_key(client, bulk.id)[SUMMARY_KEY].data
    assert f"# Bulk classification: {SCANS} of {SCANS} images" in summary

    # The same rows, read from PostgreSQL itself; and no SQLite database was made instead.
    runs = postgres.sql("SELECT id, state_name FROM flow_run ORDER BY state_name", DATABASE)
    assert runs == [[str(bulk.id), bulk.state.name], [str(retrain.id), "Promoted"]]
    keys = postgres.sql("SELECT DISTINCT key FROM artifact ORDER BY key", DATABASE)
    assert [SUMMARY_KEY] in keys and [REPORT_KEY] in keys
    # Prefect's migrations add pg_trgm: a trusted extension, so the owner needs no superuser.
    assert ["pg_trgm"] in postgres.sql("SELECT extname FROM pg_extension", DATABASE)
    assert not list(server_on_postgres.log.parent.glob("*.db"))
    [[version]] = postgres.sql("SHOW server_version")
    print(f"Prefect on PostgreSQL {version} ({postgres.bin_dir})")
