"""`digitflow alerts` against Prefect's test harness: the webhook URL stays a secret, bad input
changes nothing, and a failed run of the deployment really posts to a receiver on 127.0.0.1."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import httpx
import pytest
import typer
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from prefect.states import Failed
from typer.testing import CliRunner

from flows.alerts import block_name
from flows.cli import register
from flows.schedule import FLOW_NAME

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

DEPLOYMENT = "alerts-test"
TOKEN = "T0KEN-b7c1e9f0a2d4"
BLOCK_TYPE = "custom-webhook"


class Receiver:
    """An HTTP server on 127.0.0.1 that keeps the path and JSON body of every POST."""

    def __init__(self) -> None:
        self.posts: queue.Queue[tuple[str, dict]] = queue.Queue()
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                posts.put((self.path, json.loads(self.rfile.read(length))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # keep pytest's output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.origin}/hook/{TOKEN}"
        Thread(target=self.server.serve_forever, daemon=True).start()


def alerts(*args: str):
    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, ["alerts", *args])


def stored_block() -> dict:
    """The block document as the server keeps it, secrets included."""
    with get_client(sync_client=True) as client:
        document = client.read_block_document_by_name(
            block_name(DEPLOYMENT), BLOCK_TYPE, include_secrets=True
        )
    return document.model_dump(mode="json")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()


@pytest.fixture(scope="module")
def alert_output(receiver: Receiver) -> str:
    """What `digitflow alerts URL --name DEPLOYMENT` printed when it set up the working alert."""
    done = alerts(receiver.url, "--name", DEPLOYMENT)
    assert done.exit_code == 0, done.output
    return done.output


def test_the_url_is_never_shown_but_the_alert_is_delivered(receiver: Receiver, alert_output: str):
    assert f"posts to {receiver.origin} " in alert_output
    assert TOKEN not in alert_output
    api = PREFECT_API_URL.value()
    document = httpx.get(
        f"{api}/block_types/slug/{BLOCK_TYPE}/block_documents/name/{block_name(DEPLOYMENT)}"
    )  # a plain read: secrets obfuscated
    document.raise_for_status()
    assert TOKEN not in document.text
    assert document.json()["data"]["secrets"] == {"webhook_url": "********"}
    assert TOKEN not in httpx.post(f"{api}/automations/filter").text

    with get_client(sync_client=True) as client:  # a run of the deployment fails
        flow_id = client.create_flow_from_name(FLOW_NAME)
        deployment_id = client.create_deployment(flow_id, DEPLOYMENT)
        run = client.create_flow_run_from_deployment(deployment_id)
        client.set_flow_run_state(run.id, Failed(message="out of memory"), force=True)

    path, body = receiver.posts.get(timeout=120)
    assert path == f"/hook/{TOKEN}"  # the secret URL, in full
    assert body["subject"] == f"digitflow: {run.name} ended Failed"
    assert "out of memory" in body["text"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not a url"], "must be an http:// or https:// URL with a host"),
        (["file:///etc/passwd"], "must be an http:// or https:// URL with a host"),
        ([f"ftp://127.0.0.1/{TOKEN}"], "must be an http:// or https:// URL with a host"),
        ([f"https:///{TOKEN}"], "must be an http:// or https:// URL with a host"),
        ([f"http://127.0.0.1:99999/{TOKEN}"], "must be an http:// or https:// URL with a host"),
        (["http://127.0.0.1/hook", "--name", "Bad Name/x"], "--name 'Bad Name/x': a deployment"),
        (["http://127.0.0.1/hook", "--name", ""], "--name '': a deployment name here is"),
    ],
)
def test_a_bad_url_or_name_is_one_line_and_changes_nothing(
    receiver: Receiver, alert_output: str, args: list[str], message: str
):
    if "--name" not in args:
        args = [*args, "--name", DEPLOYMENT]  # would replace the working alert's URL
    before = stored_block()
    with get_client(sync_client=True) as client:
        automations = client.read_automations()

    done = alerts(*args)

    assert done.exit_code == 2
    assert done.stderr.startswith("error: ") and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert TOKEN not in done.stderr
    assert stored_block() == before
    assert before["data"]["secrets"] == {"webhook_url": receiver.url}
    with get_client(sync_client=True) as client:
        assert client.read_automations() == automations
