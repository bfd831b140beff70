"""End to end against a real `prefect server start` on a loopback port, over real time: the
nightly deployment with an every-minute cron, served by `digitflow schedule` and then deployed
from infra/prefect.yaml onto a process worker. Each time the server's scheduler must create a
run that executes to completion and registers a version; the run's state, report image and the
deployment are checked in headless Chromium, and the alert automation posts to a webhook
receiver on 127.0.0.1. Everything started here is stopped here."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any, TypeVar

import pytest
import yaml
from servers import free_port

from flows.artifacts import HISTORY_KEY, PER_DIGIT_KEY, PROGRESS_KEY, REPORT_KEY
from flows.schedule import DEPLOYMENT_NAME, FLOW_NAME
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
EVERY_MINUTE = "* * * * *"
# What must never reach a terminal (issue: TensorFlow/absl and Beam start-up noise).
# Settings the product chooses itself: the test process's own values must not leak in.
PRODUCT_DEFAULTS = ("TF_CPP_MIN_LOG_LEVEL",)
NOISE = ("cuInit", "absl::InitializeLog", "Could not find cuda drivers", "apitools not found")
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
        inherited = {k: v for k, v in os.environ.items() if k not in PRODUCT_DEFAULTS}
        return {
            **inherited,
            "PREFECT_HOME": str(self.log.parent),
            "PREFECT_API_URL": self.api,
            "PREFECT_UI_API_URL": self.api,  # what the UI in the browser calls
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # The scheduler looks for deployments to schedule every few seconds, not each minute.
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
            "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "2",
            "PREFECT_WORKER_QUERY_SECONDS": "5",
            "PREFECT_RUNNER_POLL_FREQUENCY": "5",
        }


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
                process.wait(timeout=90)  # serve pauses its deployments on the way out
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


@contextmanager
def api_client(server: Server) -> Iterator[Any]:
    """A Prefect API client of `server` (whatever API this process was pointed at)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings({PREFECT_API_URL: server.api}),
        get_client(sync_client=True) as api,
    ):
        yield api


@pytest.fixture
def client(prefect_server: Server) -> Iterator[Any]:
    """A Prefect API client of the test server."""
    with api_client(prefect_server) as api:
        yield api


def deployment_or_none(client, name: str) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


def finished(client, flow_run_id, log: Path) -> Any:
    """Wait for the flow run's final state; returns the flow run."""

    def final():
        current = client.read_flow_run(flow_run_id)
        return current if current.state and current.state.is_final() else None

    return wait_for(final, f"final state of flow run {flow_run_id}", 300, log)


def first_scheduled_run(client, deployment_id, log: Path) -> Any:
    """The first run the server's scheduler created, awaited until it has finished.

    An every-minute cron fires within 60 s; the run then needs ~30 s (TensorFlow's import
    and a quick MLP).
    """
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    def created():
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.COMPLETED])
                )
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=1,
        )
        return runs[0] if runs and runs[0].auto_scheduled else None

    started_run = wait_for(created, "scheduled run that started", 150, log)
    return finished(client, started_run.id, log)


def scheduled_to_done(flow_run) -> float:
    """Seconds from the time the schedule gave the run to the end of the run."""
    return (flow_run.end_time - flow_run.expected_start_time).total_seconds()


class Webhook:
    """An HTTP receiver on 127.0.0.1 that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.received: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.put(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # keep pytest's output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        Thread(target=self.server.serve_forever, daemon=True).start()

    def alert_about(self, flow_run_name: str, timeout: float, log: Path) -> dict:
        """The first alert whose subject names the flow run, waiting for it if need be."""
        deadline = time.monotonic() + timeout
        while True:
            while not self.received.empty():
                self.seen.append(self.received.get())
            found = [body for body in self.seen if flow_run_name in body.get("subject", "")]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                pytest.fail(f"no alert about {flow_run_name}: {self.seen}; {log}")
            time.sleep(0.5)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    receiver = Webhook()
    yield receiver
    receiver.server.shutdown()


def artifacts_by_key(client, flow_run_id) -> dict[str, Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    return {artifact.key: artifact for artifact in found}


def assert_quiet(log: Path) -> None:
    output = log.read_text()
    assert not [noise for noise in NOISE if noise in output], output[-3000:]


def check_in_browser(server: Server, flow_run, deployment_id, screenshots: Path) -> None:
    """The run's page shows its state name; the report's inline image really renders; the
    deployment shows its schedule."""
    from playwright.sync_api import expect, sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: run `make browser` (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server.url}/runs/flow-run/{flow_run.id}")
            expect(page.get_by_text(flow_run.name).first).to_be_visible(timeout=60_000)
            expect(page.get_by_text("Promoted", exact=True).first).to_be_visible()
            page.screenshot(path=screenshots / "flow-run.png")

            page.get_by_text("Artifacts", exact=True).click()
            page.get_by_text(REPORT_KEY, exact=True).click()
            expect(page.get_by_role("heading", name="Retrain: v1 PROMOTED")).to_be_visible(
                timeout=60_000
            )
            expect(page.get_by_role("cell", name="accuracy floor")).to_be_visible()
            image = page.get_by_role("img", name="v1 report")
            expect(image).to_be_visible(timeout=30_000)
            assert image.get_attribute("src").startswith("data:image/png;base64,")
            assert image.evaluate("img => img.complete && img.naturalWidth") > 0
            page.screenshot(path=screenshots / "report.png", full_page=True)

            page.goto(f"{server.url}/deployments/deployment/{deployment_id}")
            expect(page.get_by_text("Every minute").first).to_be_visible(timeout=60_000)
            page.screenshot(path=screenshots / "deployment.png")
        finally:
            browser.close()


def test_served_schedule_fires_completes_promotes_and_shows_in_the_ui(
    prefect_server: Server, client, digitflow_home: Path, tmp_path: Path
):
    log = tmp_path / "serve.log"
    options = ["--arch=mlp", "--epochs=1", "--train-limit=3000", "--test-limit=1000"]
    floors = ["--min-accuracy=0.5", "--min-digit-recall=0.3"]
    command = [
        str(BIN / "digitflow"),
        "schedule",
        f"--cron={EVERY_MINUTE}",
        "--name=served",
        *options,
        *floors,
    ]

    with started(command, prefect_server.env(), log):
        deployment = wait_for(
            lambda: deployment_or_none(client, f"{FLOW_NAME}/served"), "served deployment", 120, log
        )
        assert deployment.parameters == {
            **QUICK,
            "min_accuracy": 0.5,
            "min_digit_recall": 0.3,
            "profile": "full",
            "max_regression": 0.002,
            "min_holdout": 50,
            "holdout_tolerance": 0.01,
            "robustness_tolerance": 0.005,
            "force": False,
            "alias": "production",
        }

        flow_run = first_scheduled_run(client, deployment.id, log)

        assert flow_run.state.name == "Promoted", flow_run.state.message
        assert flow_run.state.is_completed()
        assert flow_run.state.message.startswith("candidate v1 promoted as the first model")
        print(f"served: scheduled -> completed in {scheduled_to_done(flow_run):.0f} s")
        found = artifacts_by_key(client, flow_run.id)
        assert set(found) == {REPORT_KEY, PER_DIGIT_KEY, HISTORY_KEY, PROGRESS_KEY}
        assert "# Retrain: v1 PROMOTED" in found[REPORT_KEY].data
        assert ModelStore(digitflow_home / "models").aliases() == {"production": 1}
        check_in_browser(prefect_server, flow_run, deployment.id, tmp_path)

    assert client.read_deployment_by_name(f"{FLOW_NAME}/served").paused  # serve pauses on exit
    assert_quiet(log)


def test_prefect_yaml_schedule_fires_on_a_process_worker_and_alerts_on_rejection(
    prefect_server: Server, client, digitflow_home: Path, tmp_path: Path, webhook: Webhook
):
    env, log = prefect_server.env(), tmp_path / "worker.log"
    # The shipped file, with the cron every minute and quick training that the gate rejects.
    spec = yaml.safe_load((REPO / "infra" / "prefect.yaml").read_text())
    [nightly] = spec["deployments"]
    nightly["schedules"][0]["cron"] = EVERY_MINUTE
    nightly["parameters"] = {**nightly["parameters"], **QUICK, "min_accuracy": 0.99}
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text(yaml.safe_dump(spec))
    prefect, digitflow = str(BIN / "prefect"), str(BIN / "digitflow")
    for command in (
        [prefect, "work-pool", "create", "digitflow", "--type", "process", "--overwrite"],
        [prefect, "--no-prompt", "deploy", "--prefect-file", str(prefect_file), "--all"],
        [digitflow, "alerts", webhook.url],
    ):
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr

    deployment = client.read_deployment_by_name(DEPLOYMENT)
    assert deployment.work_pool_name == "digitflow"
    with started([prefect, "worker", "start", "--pool", "digitflow"], env, log):
        flow_run = first_scheduled_run(client, deployment.id, log)
        # Alerts: a rejected and a failed run, started by hand. (Prefect 3.8's scheduler emits
        # no event for the runs it creates, so the server holds the state events of scheduled
        # runs for its 15-minute ordering window before automations see them.)
        # Forced: with the scheduled run's data and config it would end Unchanged, no alert.
        manual = client.create_flow_run_from_deployment(deployment.id, parameters={"force": True})
        broken = client.create_flow_run_from_deployment(
            deployment.id, parameters={"profile": "nightly"}
        )
        rejected = webhook.alert_about(finished(client, manual.id, log).name, 180, log)
        failed = finished(client, broken.id, log)
        failure = webhook.alert_about(failed.name, 180, log)

    assert flow_run.state.name == "Not promoted", flow_run.state.message
    assert flow_run.state.message.startswith("candidate v1 not promoted: accuracy floor")
    print(f"worker: scheduled -> completed in {scheduled_to_done(flow_run):.0f} s")
    store = ModelStore(digitflow_home / "models")
    first = store.get(1)  # the scheduled run's candidate; the runs started by hand add more
    assert first.metadata["flow_run_id"] == str(flow_run.id)
    assert first.metadata["gate"]["promote"] is False
    assert store.aliases() == {}
    found = artifacts_by_key(client, flow_run.id)
    assert "# Retrain: v1 NOT PROMOTED" in found[REPORT_KEY].data
    assert rejected["subject"] == f"digitflow: {manual.name} ended Not promoted"
    assert "accuracy floor" in rejected["text"]
    assert failed.state.is_failed()
    assert failure["subject"] == f"digitflow: {failed.name} ended Failed"
    assert "unknown profile 'nightly'" in failure["text"]
    assert_quiet(log)
