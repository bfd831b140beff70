"""`digitflow classify`: bulk-classify a folder of scans into CSV with the Beam pipeline, plainly
or (--prefect) as the Prefect flow `classify-folder`. Its options are the fields of
`beam_jobs.options.ClassifyOptions`.

The core CLI imports this module at every start, so it stays cheap: Beam, TensorFlow and
Prefect are imported inside the command only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from beam_jobs.options import ClassifyOptions
from digitflow import terminal
from flows.options import flat

if TYPE_CHECKING:
    from beam_jobs.classify import ClassifySummary

console = Console()
err_console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """`digitflow.commands` entry point: add `classify` to the core CLI."""
    app.command(
        "classify",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(classify_command)


@flat(ClassifyOptions, cli=True)
def classify_command(
    ctx: typer.Context,
    options: ClassifyOptions,
    prefect: Annotated[
        bool,
        typer.Option(
            "--prefect", help="Run as the Prefect flow classify-folder, summary in the UI."
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary, drift included, as JSON.")
    ] = False,
) -> None:
    """Classify every image file under INPUT into a CSV, with Apache Beam.

    Other options go to Beam: --runner (DataflowRunner, FlinkRunner, SparkRunner) and theirs.

    Locally (DirectRunner): in-process below 5,000 files, else a worker process per core.

    Refused before anything runs: an output that is a folder, has glob characters, lies in the
    input, or exists (unless --overwrite).

    Exit status 0 when the job ran, bad images included (listed in PATH.errors.csv), else 1.
    """
    if options.source.startswith("-"):  # click took an unknown (Beam) option for INPUT
        raise typer.BadParameter(
            "INPUT comes before Beam's options, e.g. `digitflow classify scans/ "
            "--output out.csv --runner DirectRunner`",
            param_hint="INPUT",
        )
    from beam_jobs.classify import ClassifyError, run

    _log_to_stderr()
    try:
        summary = _run_flow(options, ctx.args) if prefect else run(options, ctx.args)
    except ClassifyError as error:
        err_console.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except Exception as error:  # the runner's error: the job itself failed (details logged)
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
        err_console.print(f"[red]error:[/] the classification job failed: {reason}", soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        console.print(summary.report(), highlight=False, soft_wrap=True)


def _log_to_stderr() -> None:
    """The job's start and progress lines (logger `beam_jobs`) on stderr, once."""
    logger = logging.getLogger("beam_jobs")
    if not logger.handlers:
        logger.setLevel(logging.INFO)
        logger.addHandler(terminal.log_handler())
        logger.propagate = False  # Prefect's root handlers would print every line again


def _run_flow(options: ClassifyOptions, beam_args: Sequence[str]) -> ClassifySummary:
    """Run the job inside the `classify-folder` Prefect flow; print where the run is shown."""
    from prefect.settings import get_current_settings

    from flows.classify_folder import classify_folder

    prefect = get_current_settings()
    where = prefect.api.url or "a temporary local Prefect server"
    console.print(f"running flow classify-folder on {where}", highlight=False)
    state = classify_folder(**asdict(options), beam_args=list(beam_args), return_state=True)
    console.print(f"flow run state: {state.name}", highlight=False)
    if prefect.ui_url:
        run_page = f"runs/flow-run/{state.state_details.flow_run_id}"
        console.print(f"flow run: {prefect.ui_url}/{run_page}", highlight=False)
    return state.result()
