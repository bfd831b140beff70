"""`digitflow data add | list | remove`: labelled spans of people's own scans in the store.

Loaded at every start of `digitflow`, so cheap to import: the span store (numpy, Pillow) is
imported inside the commands, and none of them imports TensorFlow or Beam.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Column, Table

from digitflow.cli import data_app
from digitflow.listing import MAX_FILE_MIB
from model_store.cli import (
    JsonOption,
    MaxFileOption,
    StoreOption,
    _echo_json,
    _errors,
    _warn,
    _when,
)
from model_store.errors import StoreError
from model_store.metadata import default_actor

if TYPE_CHECKING:
    from model_store.spans import Span

DIGITS = tuple(str(digit) for digit in range(10))


def register(app: typer.Typer) -> None:
    """`digitflow.commands` entry point: add the span commands to `digitflow data`."""
    data_app.command("add")(add)
    data_app.command("list")(list_spans)
    data_app.command("remove")(remove)


def add(
    labels_csv: Annotated[
        Path,
        typer.Argument(
            metavar="LABELS.csv",
            help="Header path,label; each path relative to the CSV's folder, absolute, "
            "or an s3:// / gs:// URI; labels 0-9.",
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            help="Span name [default: the CSV's name and the UTC time].", show_default=False
        ),
    ] = None,
    store: StoreOption = None,
    json_output: JsonOption = False,
    max_file_mib: MaxFileOption = MAX_FILE_MIB,
) -> None:
    """Store LABELS.csv's images as a new labelled span; bad rows are reported and left out."""
    from model_store.spans import SpanStore

    with _errors():
        result = SpanStore(store).add(labels_csv, name, max_file_mib)
        _warn(result.problems)
        if result.span is None:
            raise StoreError(
                f"nothing stored: none of the {len(result.problems)} rows of {labels_csv} "
                "could be used"
            )
    span = result.span
    if json_output:
        _echo_json({**span.to_dict(), "problems": result.problems})
        return
    Console(soft_wrap=True).print(
        f"stored span {span.name}: {span.count} images ({_splits(span)} train/holdout), "
        f"{len(result.problems)} rows left out; per digit 0-9: {_per_digit(span)}",
        highlight=False,
    )


def list_spans(
    store: StoreOption = None,
    json_output: JsonOption = False,
    include_retired: Annotated[bool, typer.Option("--all", help="Include removed spans.")] = False,
) -> None:
    """List labelled spans: name, created, images (train/holdout), per digit, removal."""
    from model_store.spans import SpanStore

    with _errors():
        span_store = SpanStore(store)
        spans = span_store.spans(include_retired=include_retired)
    if json_output:
        _echo_json([span.to_dict() for span in spans])
        return
    removal = [Column("removed", overflow="fold", min_width=20)] if include_retired else []
    table = Table(
        Column("name", overflow="fold"),
        *(Column(name, no_wrap=True) for name in ("created", "images", "per digit 0-9")),
        *removal,
        title=f"labelled spans in {span_store.root} (images: train/holdout)",
    )
    for span in spans:
        cells = [span.name, _when(span.created_at), f"{span.count} ({_splits(span)})"]
        table.add_row(*cells, _per_digit(span), *([_removal(span)] if include_retired else []))
    Console().print(table)


def remove(
    name: Annotated[str, typer.Argument(help="The span to remove.")],
    reason: Annotated[
        str | None, typer.Option(help="Why; recorded with the removal.", show_default=False)
    ] = None,
    store: StoreOption = None,
    json_output: JsonOption = False,
) -> None:
    """Remove a span from training: recorded, never erased (`data list --all` shows it)."""
    from model_store.spans import SpanStore

    with _errors():
        span = SpanStore(store).remove(
            name, reason=reason or "manual removal", actor=default_actor()
        )
    if json_output:
        _echo_json(span.to_dict())
    else:
        Console().print(f"removed span {span.name} ({span.retired_reason})", highlight=False)


def _splits(span: Span) -> str:
    return f"{span.splits['train']}/{span.splits['holdout']}"


def _removal(span: Span) -> str:
    if span.retired_at is None:
        return ""
    return f"{_when(span.retired_at)}\nby {span.retired_by}\n{span.retired_reason}"


def _per_digit(span: Span) -> str:
    return " ".join(str(span.per_digit[digit]) for digit in DIGITS)
