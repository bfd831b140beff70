"""`digitflow retrain` (one run of the flow, now) and `digitflow schedule` (serve it nightly).

The core CLI imports this module at every start: Prefect and TensorFlow are imported inside the
commands only.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from rich.console import Console

from flows.gate import Thresholds
from flows.schedule import DEPLOYMENT_NAME, NIGHTLY_CRON, NIGHTLY_TIMEZONE

PROMOTED, FAILED, REJECTED = 0, 1, 3

Profile = Annotated[str, typer.Option(help="Training profile: fast or full (the nightly one).")]
Arch = Annotated[
    str | None, typer.Option("--arch", help="Architecture (default: the profile's, cnn).")
]
Epochs = Annotated[int | None, typer.Option(min=1, help="Override the profile's epochs.")]
Seed = Annotated[int | None, typer.Option(help="Override the profile's seed.")]
MinAccuracy = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="Gate: lowest test accuracy to promote.")
]
MaxRegression = Annotated[
    float,
    typer.Option(
        min=0.0, max=1.0, help="Gate: most accuracy the candidate may lose vs production."
    ),
]
MinDigitRecall = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="Gate: lowest recall allowed for any digit.")
]
Store = Annotated[
    str | None,
    typer.Option(
        metavar="URI",
        show_default=False,
        help="Model store (default: $DIGITFLOW_STORE or $DIGITFLOW_HOME/models).",
    ),
]
Alias = Annotated[str, typer.Option(help="The alias a passing candidate is promoted to.")]
TrainLimit = Annotated[
    int | None, typer.Option(min=1, help="Train on the first N images only (quick trials).")
]
TestLimit = Annotated[
    int | None, typer.Option(min=1, help="Evaluate on the first N test images only.")
]
NotifyUrl = Annotated[
    str | None,
    typer.Option(
        metavar="URL",
        show_default=False,
        help="Webhook to post to when a nightly run fails, crashes or is not promoted.",
    ),
]

err_console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """`digitflow.commands` entry point: add `retrain` and `schedule` to the core CLI."""
    app.command("retrain")(retrain_command)
    app.command("schedule")(schedule_command)
    app.command("alerts")(alerts_command)


def _parameters(**options: Any) -> dict[str, Any]:
    """The flow parameters given on the command line (None: the flow's default), checked."""
    from digitflow.profiles import train_config

    try:
        train_config(options["profile"], options["architecture"], options["epochs"])
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    return {name: value for name, value in options.items() if value is not None}


def retrain_command(
    profile: Profile = "full",
    architecture: Arch = None,
    epochs: Epochs = None,
    seed: Seed = None,
    min_accuracy: MinAccuracy = Thresholds.min_accuracy,
    max_regression: MaxRegression = Thresholds.max_regression,
    min_digit_recall: MinDigitRecall = Thresholds.min_digit_recall,
    store: Store = None,
    alias: Alias = "production",
    train_limit: TrainLimit = None,
    test_limit: TestLimit = None,
) -> None:
    """Run the retrain flow once: train, evaluate, gate, promote if it passes, report.

    Exit status 0: promoted; 3: the gate rejected the candidate; 1: the run failed.
    Uses the Prefect server in PREFECT_API_URL, or a temporary local one when unset.
    """
    parameters = _parameters(**locals())
    # The temporary server's 20 s start-up limit is too short on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from prefect.settings import get_current_settings

    from flows.retrain import retrain

    settings = get_current_settings()
    where = settings.api.url or "a temporary local Prefect server"
    typer.echo(f"running flow retrain ({profile} profile) on {where}")
    try:
        state = retrain(**parameters, return_state=True)
    except Exception as error:  # no run at all, e.g. PREFECT_API_URL names a server that is down
        typer.echo(f"failed: {type(error).__name__}: {' '.join(str(error).split())}")
        raise typer.Exit(FAILED) from None
    run_page = f"runs/flow-run/{state.state_details.flow_run_id}"
    if settings.ui_url:
        typer.echo(f"flow run: {settings.ui_url}/{run_page}")
    else:
        typer.echo(
            f"flow run kept in {settings.home}: `make server`, then http://127.0.0.1:4200/{run_page}"
        )
    if not state.is_completed():
        typer.echo(f"failed: {' '.join(str(state.message).split())}")
        raise typer.Exit(FAILED)
    outcome = state.result()
    typer.echo(f"report image: {outcome.report_image}")
    typer.echo(state.message)
    raise typer.Exit(PROMOTED if outcome.promoted else REJECTED)


def schedule_command(
    cron: Annotated[str, typer.Option(help="When to run, cron syntax.")] = NIGHTLY_CRON,
    timezone: Annotated[str, typer.Option(help="IANA timezone of the cron.")] = NIGHTLY_TIMEZONE,
    name: Annotated[str, typer.Option(help="Deployment name.")] = DEPLOYMENT_NAME,
    notify_url: NotifyUrl = None,
    profile: Profile = "full",
    architecture: Arch = None,
    epochs: Epochs = None,
    seed: Seed = None,
    min_accuracy: MinAccuracy = Thresholds.min_accuracy,
    max_regression: MaxRegression = Thresholds.max_regression,
    min_digit_recall: MinDigitRecall = Thresholds.min_digit_recall,
    store: Store = None,
    alias: Alias = "production",
    train_limit: TrainLimit = None,
    test_limit: TestLimit = None,
) -> None:
    """Serve the nightly retrain deployment from this process (no work pool); Ctrl-C stops it.

    Needs a Prefect server (PREFECT_API_URL), where the schedule and its runs show in the UI.
    """
    options = dict(locals())
    schedule = {key: options.pop(key) for key in ("cron", "timezone", "name", "notify_url")}
    parameters = _parameters(**options)
    from flows.schedule import nightly_schedule, serve_nightly

    try:
        nightly_schedule(schedule["cron"], schedule["timezone"])
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    _require_server("the schedule")
    serve_nightly(parameters, **schedule)


def alerts_command(
    url: Annotated[str, typer.Argument(metavar="URL", help="Webhook that receives the alerts.")],
    name: Annotated[str, typer.Option(help="Deployment name.")] = DEPLOYMENT_NAME,
) -> None:
    """Post to URL when a run of the nightly deployment fails, crashes or is not promoted.

    Creates (or updates) a Prefect automation and its webhook block on the server in
    PREFECT_API_URL; for deployments made with `prefect deploy` (`digitflow schedule
    --notify-url URL` does the same for served ones).
    """
    _require_server("an alert")
    from flows.alerts import ensure_alerts

    automation = ensure_alerts(url, name)
    typer.echo(f"automation {automation.name!r} posts to {url}")


def _require_server(what: str) -> None:
    """Exit with a one-line error when no Prefect server is configured."""
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        err_console.print(
            f"[red]error:[/] {what} needs a Prefect server to live in: run `make server`, "
            "then `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
        )
        raise typer.Exit(FAILED)
