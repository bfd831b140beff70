"""End to end against a real `prefect server start` on a loopback port: the nightly deployment
served by `digitflow schedule`, then deployed from infra/prefect.yaml onto a process worker;
each triggered, awaited, its artifacts read back over the API, and the first one's run, report
and schedule checked in the UI with headless Chromium. Everything started here is stopped here."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from flows.artifacts import IMAGE_KEY, PER_DIGIT_KEY, REPORT_KEY
from flows.schedule import DEPLOYMENT_NAME, FLOW_NAME, NIGHTLY_CRON, NIGHTLY_TIMEZONE
from model_store import ModelStore

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
QUICK = {"architecture": "mlp", "epochs": 1, "train_limit": 3000, "test_limit": 1000}
DEPLOYMENT = f"{FLOW_NAME}/{DEPLOYMENT_NAME}"
T = TypeVar("T")


@dataclass(frozen=True)
class Server:
    url: str
    log: Path

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    def env(self) -> dict[str, str]:
        """The environment of every process that talks to this server (and of the server)."""
        return {
            **os.environ,
            "PREFECT_HOME": str(self.log.parent),
            "PREFECT_API_URL": self.api,
            "PREFECT_UI_API_URL": self.api,  # what the UI in the browser calls
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def started(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """Run `command` in its own process group; on exit stop the group, politely then firmly."""
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_for(check: Callable[[], T | None], what: str, timeout: float, log: Path) -> T:
    """Poll `check` until it returns something; fail with the log's tail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := check()) is not None:
            return found
        time.sleep(1)
    pytest.fail(f"no {what} after {timeout:.0f} s; {log}:\n{log.read_text()[-3000:]}")


def healthy(url: str) -> bool | None:
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
            return response.status == 200 or None
    except OSError:
        return None


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`prefect server start` (SQLite, with the UI) in a temporary PREFECT_HOME."""
    port = free_port()
    server = Server(f"http://127.0.0.1:{port}", tmp_path_factory.mktemp("prefect-home") / "log")
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with started(command, server.env(), server.log):
        wait_for(lambda: healthy(server.url), "healthy server", 180, server.log)
        yield server


@pytest.fixture
def client(prefect_server: Server) -> Iterator[Any]:
    """A Prefect API client of the test server (whatever API this process was pointed at)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings({PREFECT_API_URL: prefect_server.api}),
        get_client(sync_client=True) as api,
    ):
        yield api


def deployment_or_none(client) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(DEPLOYMENT)
    except ObjectNotFound:
        return None


def run_to_the_end(client, deployment_id, parameters: dict[str, Any], log: Path) -> Any:
    """Trigger a run of the deployment and wait for its final state; returns the flow run."""
    run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters)

    def finished():
        current = client.read_flow_run(run.id)
        return current if current.state and current.state.is_final() else None

    return wait_for(finished, f"final state of flow run {run.name}", 300, log)


def artifacts_by_key(client, flow_run_id) -> dict[str, Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    return {artifact.key: artifact for artifact in found}


def assert_nightly_schedule(deployment) -> None:
    [schedule] = deployment.schedules
    assert schedule.active
    assert (schedule.schedule.cron, schedule.schedule.timezone) == (NIGHTLY_CRON, NIGHTLY_TIMEZONE)


def check_in_browser(server: Server, flow_run, deployment_id, screenshots: Path) -> None:
    """The run's page shows the run; its report renders; the deployment shows the schedule."""
    from playwright.sync_api import expect, sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: run `make browser` (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server.url}/runs/flow-run/{flow_run.id}")
            expect(page.get_by_text(flow_run.name).first).to_be_visible(timeout=60_000)
            expect(page.get_by_text("Completed").first).to_be_visible()
            # The decision, in the flow's last log line ("Finished in state Completed('...')")
            expect(page.get_by_text("candidate v1 promoted").first).to_be_visible(timeout=60_000)
            page.screenshot(path=screenshots / "flow-run.png")

            page.get_by_text("Artifacts", exact=True).click()
            page.get_by_text(REPORT_KEY, exact=True).click()
            expect(page.get_by_role("heading", name="Retrain: v1 PROMOTED")).to_be_visible(
                timeout=60_000
            )
            expect(page.get_by_role("cell", name="accuracy floor")).to_be_visible()
            page.screenshot(path=screenshots / "report.png", full_page=True)

            page.goto(f"{server.url}/deployments/deployment/{deployment_id}")
            expect(page.get_by_text("At 02:00 AM every day")).to_be_visible(timeout=60_000)
            expect(page.get_by_text(flow_run.name)).to_be_visible(timeout=60_000)
            page.screenshot(path=screenshots / "deployment.png")
        finally:
            browser.close()


def test_served_deployment_runs_when_triggered_and_shows_in_the_ui(
    prefect_server: Server, client, digitflow_home: Path, tmp_path: Path
):
    log = tmp_path / "serve.log"
    options = ["--arch=mlp", "--epochs=1", "--train-limit=3000", "--test-limit=1000"]
    floors = ["--min-accuracy=0.5", "--min-digit-recall=0.3"]
    command = [str(BIN / "digitflow"), "schedule", *options, *floors]

    with started(command, prefect_server.env(), log):
        deployment = wait_for(lambda: deployment_or_none(client), "served deployment", 120, log)
        assert_nightly_schedule(deployment)
        assert deployment.parameters == {
            **QUICK,
            "min_accuracy": 0.5,
            "min_digit_recall": 0.3,
            "profile": "full",
            "max_regression": 0.002,
            "alias": "production",
        }

        flow_run = run_to_the_end(client, deployment.id, {}, log)

        assert flow_run.state.is_completed(), flow_run.state.message
        assert flow_run.state.message.startswith("candidate v1 promoted as the first model")
        found = artifacts_by_key(client, flow_run.id)
        assert set(found) == {REPORT_KEY, PER_DIGIT_KEY, IMAGE_KEY}
        assert "# Retrain: v1 PROMOTED" in found[REPORT_KEY].data
        assert ModelStore(digitflow_home / "models").aliases() == {"production": 1}
        check_in_browser(prefect_server, flow_run, deployment.id, tmp_path)

    assert client.read_deployment_by_name(DEPLOYMENT).paused  # serve pauses it when it stops


def test_prefect_yaml_deploys_onto_a_process_worker(
    prefect_server: Server, client, digitflow_home: Path, tmp_path: Path
):
    env, log = prefect_server.env(), tmp_path / "worker.log"
    prefect = str(BIN / "prefect")
    for command in (
        [prefect, "work-pool", "create", "digitflow", "--type", "process", "--overwrite"],
        [prefect, "--no-prompt", "deploy", "--prefect-file", "infra/prefect.yaml", "--all"],
    ):
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr

    deployment = client.read_deployment_by_name(DEPLOYMENT)
    assert deployment.work_pool_name == "digitflow"
    assert_nightly_schedule(deployment)
    with started([prefect, "worker", "start", "--pool", "digitflow"], env, log):
        flow_run = run_to_the_end(client, deployment.id, {**QUICK, "min_accuracy": 0.99}, log)

    assert flow_run.state.is_completed(), flow_run.state.message
    assert flow_run.state.message.startswith("candidate v1 not promoted: accuracy floor")
    store = ModelStore(digitflow_home / "models")
    assert [version.version for version in store.list_versions()] == [1]
    assert store.aliases() == {}
    found = artifacts_by_key(client, flow_run.id)
    assert "# Retrain: v1 NOT PROMOTED" in found[REPORT_KEY].data
