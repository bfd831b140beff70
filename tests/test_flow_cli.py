"""`digitflow retrain` / `digitflow schedule` wiring: options, checks, the deployment they make,
and infra/prefect.yaml kept in step with the schedule and options in code. Nothing here starts
a Prefect server or trains."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from beam_jobs.options import ClassifyOptions
from digitflow.options import spec
from flows.cli import register
from flows.gate import Thresholds
from flows.options import RetrainOptions, flat
from flows.schedule import DEPLOYMENT_NAME, NIGHTLY_CRON, NIGHTLY_TIMEZONE, TAGS

REPO = Path(__file__).resolve().parents[1]
DIGITFLOW = str(Path(sys.executable).with_name("digitflow"))


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_help_lists_every_plugin_command_without_importing_prefect_or_tensorflow():
    code = (
        "import sys\n"
        "from digitflow.cli import main\n"
        "sys.argv = ['digitflow', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(*(name in sys.modules for name in ('prefect', 'tensorflow', 'keras')))\n"
    )
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    *help_text, imported = out.stdout.splitlines()
    for command in ("retrain", "schedule", "alerts", "classify", "models"):
        assert f" {command} " in "\n".join(help_text), out.stdout
    assert imported.split() == ["False", "False", "False"]


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


def test_command_line_values_reach_the_command_as_one_option_set():
    received: list[RetrainOptions] = []

    @flat(RetrainOptions, cli=True)
    def probe(options: RetrainOptions) -> None:
        received.append(options)

    app = typer.Typer()
    app.command("probe")(probe)
    app.command("other")(lambda: None)  # a command group, as in `digitflow`
    args = ["probe", "--arch", "mlp", "--min-accuracy", "0.98", "--train-limit", "10", "--force"]
    args += ["--min-holdout", "20", "--holdout-tolerance", "0.02"]

    done = CliRunner().invoke(app, args)

    assert done.exit_code == 0, done.output
    assert received == [
        RetrainOptions(
            architecture="mlp",
            min_accuracy=0.98,
            train_limit=10,
            force=True,
            min_holdout=20,
            holdout_tolerance=0.02,
        )
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-accuracy", "1.5"], "'--min-accuracy': Input should be less than or equal to 1"),
        (["--epochs", "0"], "'--epochs': Input should be greater than or equal to 1"),
    ],
)
def test_retrain_refuses_values_out_of_their_bounds(args, message):
    result = CliRunner().invoke(cli(), ["retrain", *args])

    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_the_served_deployment_carries_the_schedule_and_options_given():
    from flows.schedule import nightly_deployment

    options = RetrainOptions(profile="fast", architecture="mlp", min_accuracy=0.98)

    deployment = nightly_deployment(options.parameters(), "30 1 * * *", "Europe/Paris", "night")

    assert deployment.name == "night"
    assert deployment.entrypoint == "flows.retrain.retrain"  # the installed module, any folder
    [schedule] = deployment.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 1 * * *", "Europe/Paris")
    assert deployment.parameters == {
        "profile": "fast",
        "architecture": "mlp",
        "min_accuracy": 0.98,
        "max_regression": RetrainOptions.max_regression,
        "min_digit_recall": RetrainOptions.min_digit_recall,
        "min_holdout": RetrainOptions.min_holdout,
        "holdout_tolerance": RetrainOptions.holdout_tolerance,
        "robustness_tolerance": RetrainOptions.robustness_tolerance,
        "alias": "production",
        "force": False,
    }


def test_the_flow_parameter_schema_is_the_option_set():
    """What the Prefect UI's run form and `prefect deploy` show: each option, flat, with its
    default and help; what the server validates parameters against."""
    from flows.retrain import retrain

    schema = retrain.parameters.model_dump_for_openapi()

    assert list(schema["properties"]) == [item.name for item in fields(RetrainOptions)]
    for item in fields(RetrainOptions):
        assert schema["properties"][item.name]["default"] == item.default
        assert schema["properties"][item.name]["description"] == spec(item).help
    assert "required" not in schema


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
    assert set(deployment["parameters"]) <= {item.name for item in fields(RetrainOptions)}
    assert spec["pull"] == []  # runs import the installed package; nothing to fetch


def test_the_gate_thresholds_are_declared_once_in_the_gate():
    declared = {item.name: item for item in fields(Thresholds)}
    options = {item.name: item for item in fields(RetrainOptions) if item.name in declared}

    assert list(options) == list(declared)
    for name, item in options.items():
        assert (item.default, spec(item)) == (declared[name].default, spec(declared[name]))
    assert RetrainOptions(min_accuracy=0.98, min_holdout=7).thresholds == Thresholds(
        min_accuracy=0.98, min_holdout=7
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Thresholds(min_holdout=-1), "min_holdout must be at least 0, got -1"),
        (lambda: ClassifyOptions("in", "out.csv", shards=0), "shards must be at least 1, got 0"),
        (
            lambda: ClassifyOptions("in", "out.csv", min_confidence=1.5),
            "min_confidence must be between 0 and 1, got 1.5",
        ),
    ],
)
def test_option_sets_built_in_code_refuse_values_out_of_their_bounds(make, message):
    with pytest.raises(ValueError, match=message):
        make()
