"""`digitflow retrain` / `digitflow schedule` wiring, and infra/prefect.yaml kept in step with the
schedule defined in code. Nothing here starts a Prefect server or trains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from flows.cli import register
from flows.schedule import (
    DEPLOYMENT_NAME,
    NIGHTLY_CRON,
    NIGHTLY_TIMEZONE,
    TAGS,
    nightly_schedule,
)

REPO = Path(__file__).resolve().parents[1]
DIGITFLOW = str(Path(sys.executable).with_name("digitflow"))


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_core_cli_gets_both_commands_without_importing_prefect_or_tensorflow():
    code = (
        "import sys\n"
        "from importlib.metadata import entry_points\n"
        "from typer.testing import CliRunner\n"
        "from digitflow.cli import app\n"
        "[plugin] = entry_points(group='digitflow.commands', name='retrain')\n"
        "plugin.load()(app)\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "assert 'retrain' in result.output and 'schedule' in result.output, result.output\n"
        "print(*(name in sys.modules for name in ('prefect', 'tensorflow', 'keras')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_schedule_refuses_to_start_without_a_prefect_server(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path)  # no profile pointing at a server either

    done = subprocess.run(
        [DIGITFLOW, "schedule"], env=env, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 1
    assert "needs a Prefect server" in done.stderr
    assert "PREFECT_API_URL=http://127.0.0.1:4200/api" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timezone", "Mars/Olympus"], "unknown timezone 'Mars/Olympus'"),
        (["--cron", "0 2 * *"], "Invalid cron string"),
        (["--profile", "nightly"], "unknown profile 'nightly'"),
        (["--arch", "transformer"], "unknown architecture 'transformer'"),
    ],
)
def test_schedule_options_are_checked_before_anything_starts(args, message):
    result = CliRunner().invoke(cli(), ["schedule", *args])

    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_retrain_refuses_an_unknown_profile_before_running():
    result = CliRunner().invoke(cli(), ["retrain", "--profile", "nightly"])

    assert result.exit_code == 2
    assert "unknown profile 'nightly'" in result.output


def test_nightly_schedule_is_2am_utc():
    schedule = nightly_schedule()
    assert (schedule.cron, schedule.timezone) == ("0 2 * * *", "UTC")


def test_prefect_yaml_deploys_the_flow_on_the_schedule_in_code():
    from prefect.utilities.importtools import import_object

    from flows.retrain import retrain

    spec = yaml.safe_load((REPO / "infra" / "prefect.yaml").read_text())
    [deployment] = spec["deployments"]

    assert deployment["name"] == DEPLOYMENT_NAME
    assert import_object(deployment["entrypoint"]) is retrain
    assert deployment["schedules"] == [
        {"cron": NIGHTLY_CRON, "timezone": NIGHTLY_TIMEZONE, "active": True}
    ]
    assert deployment["tags"] == TAGS
    assert deployment["work_pool"]["name"] == "digitflow"
    assert spec["pull"] == []  # runs import the installed package; nothing to fetch
