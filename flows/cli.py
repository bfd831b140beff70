"""`digitflow retrain` (one run of the flow, now), `digitflow schedule` (serve it nightly) and
`digitflow alerts`. The retrain options are the fields of `flows.options.RetrainOptions`.

The core CLI imports this module at every start: Prefect and TensorFlow are imported inside the
commands only.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from flows.options import RetrainOptions, flat
from flows.schedule import DEPLOYMENT_NAME, NIGHTLY_CRON, NIGHTLY_TIMEZONE

PROMOTED, UNCHANGED, FAILED, REJECTED = 0, 0, 1, 3
BAD_ARGUMENT = 2  # as click's usage errors

err_console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """`digitflow.commands` entry point: add `retrain`, `schedule` and `alerts` to the core CLI."""
    app.command("retrain")(retrain_command)
    app.command("schedule")(schedule_command)
    app.command("alerts")(alerts_command)


def _check(options: RetrainOptions) -> None:
    """Refuse an unknown profile or architecture before anything starts."""
    try:
        options.training_config()
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


@flat(RetrainOptions, cli=True)
def retrain_command(options: RetrainOptions) -> None:
    """Run the retrain flow once: train, evaluate, gate, promote if it passes, report.

    Exit status 0: promoted, or unchanged (the alias points to the version trained on the same
    data and config, and it passes today's gate: nothing trained or registered); 3: the gate
    rejected the candidate (a version trained on the same data and config is judged again,
    not retrained); 1: the run failed.
    Uses the Prefect server in PREFECT_API_URL, or a temporary local one when unset.
    """
    _check(options)
    # The temporary server's 20 s start-up limit is too short on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from prefect.settings import get_current_settings

    from flows.retrain import retrain
    from flows.retrain_report import UNCHANGED as UNCHANGED_STATE

    settings = get_current_settings()
    where = settings.api.url or "a temporary local Prefect server"
    typer.echo(f"running flow retrain ({options.profile} profile) on {where}")
    try:
        state = retrain(**options.parameters(), return_state=True)
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
    if state.name == UNCHANGED_STATE:
        typer.echo(state.message)
        raise typer.Exit(UNCHANGED)
    outcome = state.result()
    typer.echo(f"report image: {outcome.report_image}")
    typer.echo(state.message)
    raise typer.Exit(PROMOTED if outcome.promoted else REJECTED)


@flat(RetrainOptions, cli=True)
def schedule_command(
    cron: Annotated[str, typer.Option(help="When to run, cron syntax.")] = NIGHTLY_CRON,
    timezone: Annotated[str, typer.Option(help="IANA timezone of the cron.")] = NIGHTLY_TIMEZONE,
    name: Annotated[str, typer.Option(help="Deployment name.")] = DEPLOYMENT_NAME,
    notify_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            show_default=False,
            help="Webhook to post to when a nightly run fails, crashes or is not promoted.",
        ),
    ] = None,
    *,
    options: RetrainOptions,
) -> None:
    """Serve the nightly retrain deployment from this process (no work pool); Ctrl-C stops it.

    Needs a Prefect server (PREFECT_API_URL), where the schedule and its runs show in the UI.
    """
    _check(options)
    if notify_url:
        _check_alert(notify_url, name)
    from flows.schedule import nightly_deployment, nightly_schedule

    try:
        nightly_schedule(cron, timezone)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    _require_server("the schedule")
    from prefect import serve

    deployment = nightly_deployment(options.parameters(), cron, timezone, name)
    if notify_url:
        from flows.alerts import ensure_alerts

        ensure_alerts(notify_url, name)
    # One run at a time; stopping the process pauses the schedule (Prefect's default for serve).
    serve(deployment, limit=1)


def alerts_command(
    url: Annotated[str, typer.Argument(metavar="URL", help="Webhook that receives the alerts.")],
    name: Annotated[str, typer.Option(help="Deployment name.")] = DEPLOYMENT_NAME,
) -> None:
    """Post to URL when a run of the nightly deployment fails, crashes or is not promoted.

    Creates (or updates) a Prefect automation and its webhook block on the server in
    PREFECT_API_URL; for deployments made with `prefect deploy` (`digitflow schedule
    --notify-url URL` does the same for served ones). URL must be http(s); it is kept in the
    block's secret field and only its scheme and host are shown.
    """
    origin = _check_alert(url, name)
    _require_server("an alert")
    from flows.alerts import ensure_alerts

    automation = ensure_alerts(url, name)
    typer.echo(f"automation {automation.name!r} posts to {origin} (URL kept as a secret)")


def _check_alert(url: str, name: str) -> str:
    """The webhook's `scheme://host`; a one-line error, before anything is saved, for a URL
    or deployment name that cannot work."""
    from flows.alerts import check_deployment_name, webhook_origin

    try:
        check_deployment_name(name)
        return webhook_origin(url)
    except ValueError as error:
        err_console.print(f"[red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        raise typer.Exit(BAD_ARGUMENT) from None


def _require_server(what: str) -> None:
    """Exit with a one-line error when no Prefect server is configured."""
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        err_console.print(
            f"[red]error:[/] {what} needs a Prefect server to live in: run `make server`, "
            "then `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
        )
        raise typer.Exit(FAILED)
