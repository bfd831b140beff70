"""`digitflow models ...`: list, show, register, promote, roll back and audit model versions.

The core CLI imports this module at every start, so it must stay cheap: no Keras, TensorFlow
or Beam imports here (the S3 and GCS clients are imported on first use, for such stores only).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from model_store.aliases import ANY, Expected
from model_store.card import InvalidCard, Metrics
from model_store.errors import PromotionConflict, StoreError
from model_store.metadata import default_actor
from model_store.records import CorruptEntry, HistoryEntry, ModelVersion
from model_store.refs import label
from model_store.store import ModelStore

models_app = typer.Typer(
    help="Versioned model store: register, promote, roll back, audit.", no_args_is_help=True
)

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        metavar="URI",
        show_default=False,
        help="Store root, a path or gs:// / s3:// URI "
        "[default: $DIGITFLOW_STORE or $DIGITFLOW_HOME/models].",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
MaxFileOption = Annotated[
    int,
    typer.Option(
        "--max-file-mib", metavar="N", min=1, help="Refuse files over N MiB without reading them."
    ),
]
AliasOption = Annotated[str, typer.Option("--alias", help="The alias to change.")]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="Why; recorded in the history.", show_default=False)
]


def register(app: typer.Typer) -> None:
    """`digitflow.commands` entry point: add the `models` commands to the core CLI."""
    app.add_typer(models_app, name="models")


@models_app.command("list")
def list_versions(store: StoreOption = None, json_output: JsonOption = False) -> None:
    """List versions: number, creation time, accuracy and aliases; corrupt ones as such."""
    with _errors():
        model_store = ModelStore(store)
        listing = model_store.listing()
    rows = sorted([*listing.versions, *listing.corrupt], key=lambda row: row.version)
    if json_output:
        _echo_json([row.to_dict() for row in rows])
    else:
        table = Table("version", "created", "accuracy", "aliases", title=f"in {model_store.root}")
        for row in rows:
            table.add_row(
                label(row.version),
                "corrupt" if isinstance(row, CorruptEntry) else _when(row.created_at),
                "-" if isinstance(row, CorruptEntry) else _accuracy(row),
                ", ".join(row.aliases),
            )
        Console().print(table)
    _warn(entry.problem for entry in listing.corrupt)


@models_app.command()
def show(
    ref: Annotated[str, typer.Argument(help="Version (7, v7) or alias (production).")],
    store: StoreOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show one version with all its metadata."""
    with _errors():
        version = ModelStore(store).get(ref)
    if json_output:
        _echo_json(version.to_dict())
        return
    console = Console()
    aliases = ", ".join(version.aliases) or "no aliases"
    console.print(f"{label(version.version)}  created {version.created_at}  ({aliases})")
    console.print(f"model: {version.model_uri}", highlight=False)
    console.print_json(data=version.metadata)


@models_app.command("register")
def register_model(
    path: Annotated[Path, typer.Argument(help="The .keras model file to copy in.")],
    metrics_json: Annotated[
        str | None,
        typer.Option(
            metavar="FILE|JSON",
            show_default=False,
            help="A JSON object of metrics, in a file or inline, e.g. the output of "
            "`digitflow evaluate MODEL --json`; fractions must be in [0, 1].",
        ),
    ] = None,
    reason: ReasonOption = None,
    store: StoreOption = None,
    json_output: JsonOption = False,
) -> None:
    """Register a model file as the next version (it is not promoted)."""
    with _errors():
        metrics = _read_metrics(metrics_json) if metrics_json is not None else {}
        metadata: dict[str, Any] = {"metrics": metrics}
        metadata["registered_by"] = default_actor()
        if reason:
            metadata["reason"] = reason
        version = ModelStore(store).register(path, metadata)
    if json_output:
        _echo_json(version.to_dict())
    else:
        Console().print(f"registered {label(version.version)} (accuracy {_accuracy(version)})")


@models_app.command()
def promote(
    ref: Annotated[str, typer.Argument(help="Version (7, v7) or alias to promote.")],
    alias: AliasOption = "production",
    reason: ReasonOption = None,
    expected: Annotated[
        str | None,
        typer.Option(
            metavar="VERSION",
            show_default=False,
            help="Only switch if the alias points to this version now ('none': unset); "
            "otherwise exit 2.",
        ),
    ] = None,
    store: StoreOption = None,
    json_output: JsonOption = False,
) -> None:
    """Point an alias (default: production) at a version, in one atomic switch."""
    with _errors():
        entry = ModelStore(store).promote(
            ref,
            alias=alias,
            expected=_expected(expected),
            reason=reason or "manual promotion",
            actor=default_actor(),
        )
    _print_change(entry, json_output)


@models_app.command()
def rollback(
    alias: AliasOption = "production",
    reason: ReasonOption = None,
    store: StoreOption = None,
    json_output: JsonOption = False,
) -> None:
    """Point an alias back at the version it had before its last promotion."""
    with _errors():
        entry = ModelStore(store).rollback(
            alias=alias, reason=reason or "manual rollback", actor=default_actor()
        )
    _print_change(entry, json_output)


@models_app.command()
def history(
    alias: Annotated[
        str | None, typer.Option(help="Only this alias's changes.", show_default=False)
    ] = None,
    store: StoreOption = None,
    json_output: JsonOption = False,
) -> None:
    """Every alias change, oldest first: when, from, to, why and by whom."""
    with _errors():
        log = ModelStore(store).history_log(alias)
    if json_output:
        _echo_json([entry.to_dict() for entry in log.entries])
    else:
        fixed = [Column(name, no_wrap=True) for name in ("at", "alias", "action", "from", "to")]
        wrapped = [Column(name, overflow="fold") for name in ("reason", "by")]
        table = Table(*fixed, *wrapped, title="history")
        for e in log.entries:
            table.add_row(
                _when(e.at),
                e.alias,
                e.action,
                label(e.from_version),
                label(e.to_version),
                e.reason,
                e.actor,
            )
        Console().print(table)
    _warn(log.problems)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn store and I/O errors into one red line; exit 2 for a conflict, 1 otherwise."""
    try:
        yield
    except (StoreError, OSError) as error:
        _stderr_line("error", str(error) or type(error).__name__, "red")
        raise typer.Exit(2 if isinstance(error, PromotionConflict) else 1) from None


def _warn(problems: Iterable[str]) -> None:
    """A yellow `warning:` line on stderr for each problem that did not stop the command."""
    for problem in problems:
        _stderr_line("warning", problem, "yellow")


def _stderr_line(kind: str, message: str, style: str) -> None:
    """`kind: message` as one line on stderr: whitespace collapsed, no wrapping, no markup."""
    Console(stderr=True, soft_wrap=True).print(
        f"{kind}: {' '.join(message.split())}", style=style, markup=False, highlight=False
    )


def _expected(option: str | None) -> Expected:
    """`--expected` as the store takes it: ANY when absent, None for 'none'."""
    if option is None:
        return ANY
    return None if option == "none" else option


def _read_metrics(option: str) -> dict[str, Any]:
    """`--metrics-json`: a JSON object inline (it starts with `{`) or in a file, checked
    against the model card's metrics; StoreError, in one line, if it is not valid."""
    inline = option.lstrip().startswith("{")
    where = "--metrics-json" if inline else f"--metrics-json {option}"
    try:
        metrics = json.loads(option if inline else Path(option).read_text())
    except (OSError, ValueError) as error:
        raise StoreError(f"{where}: {error}") from None
    if not isinstance(metrics, dict):
        raise StoreError(f"{where}: expected a JSON object, got {type(metrics).__name__}")
    metrics.pop("model", None)  # `evaluate --json` names the pre-registration file; drop it
    try:
        return Metrics.from_dict(metrics).to_dict()
    except InvalidCard as error:
        raise StoreError(f"{where}: {error}") from None


def _when(iso: str) -> str:
    """ISO time for a table: `2025-01-31 02:00:00` for UTC, other offsets kept."""
    return iso.replace("T", " ").removesuffix("+00:00")


def _accuracy(version: ModelVersion) -> str:
    accuracy = version.card.metrics.accuracy
    return "-" if accuracy is None else f"{accuracy:.4f}"


def _print_change(entry: HistoryEntry, json_output: bool) -> None:
    if json_output:
        _echo_json(entry.to_dict())
    else:
        Console().print(
            f"{entry.alias}: {label(entry.from_version)} -> {label(entry.to_version)} "
            f"({entry.action}: {entry.reason})",
            highlight=False,
        )


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))
