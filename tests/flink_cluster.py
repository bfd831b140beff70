"""A standalone Apache Flink session cluster on 127.0.0.1, and how a Beam job reaches it.

One JobManager (`StandaloneSessionClusterEntrypoint`) and one TaskManager (`TaskManagerRunner`),
each its own JVM, started as a Flink distribution's `jobmanager.sh` / `taskmanager.sh` start
them: the configuration in infra/flink/conf, JVM flags and derived memory settings from Flink's
`BashJavaUtils`, the Java 17 module flags of Flink's default config (infra/flink/java17.args).
Ports are chosen free; logs and Flink's temp files go to the given folder. The jars come from
`make flink` (.cache/flink, see docs/flink.md); nothing is downloaded here.

A job reaches the cluster through Beam's Flink job server, which Beam's FlinkRunner starts from
`--flink_job_server_jar` (a launcher jar whose manifest lists the job server's jars) and which
submits to `--flink_master`; the Python SDK workers come from a worker pool (servers.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from servers import ServerExited, _process, _wait_until, free_port

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "flink"
CLUSTER_JARS = CACHE / "cluster"
JOB_SERVER_JAR = CACHE / "beam-flink-job-server.jar"
CONF = ROOT / "infra" / "flink" / "conf"
JAVA_MODULE_FLAGS = ROOT / "infra" / "flink" / "java17.args"
START_ATTEMPTS = 3


class FlinkNotFetched(FileNotFoundError):
    """`make flink` has not run: the cluster's or the job server's jars are missing."""


@dataclass(frozen=True)
class FlinkCluster:
    """A running cluster: its REST endpoint, and the folder of its logs (`jobmanager.log`,
    `taskmanager.log`; `.out` for their consoles) and temp files."""

    rest_port: int
    workdir: Path

    @property
    def master(self) -> str:
        """What `--flink_master` takes: the JobManager's REST endpoint."""
        return f"127.0.0.1:{self.rest_port}"

    def beam_options(self, pool_port: int) -> list[str]:
        """The Beam options that run a job here, its Python workers from the pool at
        `pool_port` (servers.worker_pool)."""
        return [
            "--runner=FlinkRunner",
            f"--flink_master={self.master}",
            f"--flink_job_server_jar={JOB_SERVER_JAR}",
            "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{pool_port}",
        ]

    def overview(self) -> dict[str, object]:
        """The cluster's `/overview`: task managers, slots, jobs run, finished, failed."""
        return _get_json(f"http://{self.master}/overview") or {}

    def jobs(self) -> list[dict[str, object]]:
        """Every job the cluster has run or runs, the latest first: id, name, state, duration
        (ms)..."""
        found = _get_json(f"http://{self.master}/jobs/overview") or {}
        return sorted(found.get("jobs", []), key=lambda job: job["start-time"], reverse=True)


@contextmanager
def flink_cluster(workdir: Path) -> Iterator[FlinkCluster]:
    """A JobManager and a TaskManager with one slot, running until the block ends."""
    java = shutil.which("java")
    missing = [p for p in (CLUSTER_JARS, JOB_SERVER_JAR) if not p.exists()]
    if java is None or missing:
        raise FlinkNotFetched(
            f"Flink is not fetched (missing: {', '.join(map(str, missing)) or 'java'}): "
            "run `make flink`"
        )
    with ExitStack() as stack:
        rest_port, rpc_port = stack.enter_context(_jobmanager(java, workdir))
        cluster = FlinkCluster(rest_port, workdir)
        stack.enter_context(_taskmanager(java, workdir, rpc_port, cluster))
        yield cluster


@contextmanager
def _jobmanager(java: str, workdir: Path) -> Iterator[tuple[int, int]]:
    """The JobManager, its REST endpoint answering; (REST port, RPC port). A port found free
    can be taken before the JobManager binds it: one that exits early is started again."""
    jvm, derived = _resource_params(java, "GET_JM_RESOURCE_PARAMS")
    for attempt in range(1, START_ATTEMPTS + 1):
        rest_port, rpc_port = free_port(), free_port()
        command = _flink_command(
            java,
            jvm,
            "jobmanager",
            workdir,
            "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint",
            [*derived, "-D", f"rest.port={rest_port}", "-D", f"jobmanager.rpc.port={rpc_port}"],
        )
        with _process(command, workdir / "jobmanager.out") as process:
            url = f"http://127.0.0.1:{rest_port}/overview"
            try:
                _wait_until(
                    lambda url=url: _get_json(url) is not None, process, workdir / "jobmanager.out"
                )
            except ServerExited:
                if attempt == START_ATTEMPTS:
                    raise
                continue
            yield rest_port, rpc_port
            return


@contextmanager
def _taskmanager(java: str, workdir: Path, rpc_port: int, cluster: FlinkCluster) -> Iterator[None]:
    """The TaskManager, registered with the JobManager and its slot free."""
    jvm, derived = _resource_params(java, "GET_TM_RESOURCE_PARAMS")
    command = _flink_command(
        java,
        jvm,
        "taskmanager",
        workdir,
        "org.apache.flink.runtime.taskexecutor.TaskManagerRunner",
        [*derived, "-D", f"jobmanager.rpc.port={rpc_port}"],
    )

    def registered() -> bool:
        overview = cluster.overview()
        return overview.get("taskmanagers") == 1 and overview.get("slots-available") == 1

    with _process(command, workdir / "taskmanager.out") as process:
        _wait_until(registered, process, workdir / "taskmanager.out")
        yield


def _flink_command(
    java: str, jvm: list[str], name: str, workdir: Path, main: str, args: list[str]
) -> list[str]:
    """A Flink process as Flink's start scripts launch it, its log in `workdir/<name>.log`."""
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    return [
        java, f"@{JAVA_MODULE_FLAGS}", *jvm,
        f"-Dlog.file={workdir / f'{name}.log'}",
        f"-Dlog4j.configurationFile=file:{CONF / 'log4j.properties'}",
        "-cp", f"{CLUSTER_JARS}/*", main,
        "--configDir", str(CONF), "-D", f"io.tmp.dirs={tmp}", *args,
    ]  # fmt: skip


def _resource_params(java: str, which: str) -> tuple[list[str], list[str]]:
    """Flink's BashJavaUtils on the configuration, as the start scripts run it: a process's
    JVM memory flags, and the derived memory settings it must be given (`-D key=value`...)."""
    done = subprocess.run(
        [java, "-cp", f"{CLUSTER_JARS}/*", "org.apache.flink.runtime.util.bash.BashJavaUtils",
         which, "--configDir", str(CONF)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    prefix = "BASH_JAVA_UTILS_EXEC_RESULT:"
    results = [line[len(prefix) :] for line in done.stdout.splitlines() if line.startswith(prefix)]
    if len(results) != 2:
        raise RuntimeError(f"BashJavaUtils {which} said:\n{done.stdout}{done.stderr}")
    return results[0].split(), results[1].split()


def _get_json(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return None
