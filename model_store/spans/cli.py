"""`digitflow data add | list | remove`: labelled spans of people's own scans in the store.

Loaded at every start of `digitflow`, so cheap to import: the span store (numpy, Pillow) is
imported inside the commands. None imports Beam; only `add`, and only when the store has a
production model to check the labels with, imports TensorFlow.
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
from model_store.errors import CorruptVersion, StoreError
from model_store.metadata import default_actor
from model_store.refs import label
from model_store.store import ModelStore

if TYPE_CHECKING:
    from model_store.spans.checks import LabelCheck, Suspect
    from model_store.spans.drafts import Draft
    from model_store.spans.records import Span, TornSpan

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
            help="Header path (or file) and label, optionally predicted and source; each path "
            "an s3:// / gs:// URI, absolute, or relative to the CSV's own folder; labels 0-9. "
            "A row is a model's unconfirmed guess while its source is model:... and its label "
            "is still its predicted digit; edit the label or set source to person to confirm.",
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            help="Span name (default: the CSV's name and the UTC time).", show_default=False
        ),
    ] = None,
    accept_unreviewed: Annotated[
        bool,
        typer.Option(
            "--accept-unreviewed",
            help="Store a model's unconfirmed guesses too: they train, never in a holdout.",
        ),
    ] = False,
    accept_disagreement: Annotated[
        bool,
        typer.Option(
            "--accept-disagreement",
            help="Store the span even if production agrees with its labels less than half "
            "as often as its recorded accuracy.",
        ),
    ] = False,
    store: StoreOption = None,
    json_output: JsonOption = False,
    max_file_mib: MaxFileOption = MAX_FILE_MIB,
) -> None:
    """Store LABELS.csv's images as a new labelled span; bad rows are reported and left out.

    Before storing, production (if the store has one) is checked against the labels: its
    agreement is printed, the images it contradicts with high confidence are warned about, and a
    span it mostly disagrees with is refused. An image that an active span labels differently is
    warned about: the newest span's label is used (a person's label beats a model's guess).
    """
    from model_store.spans.store import SpanStore

    console = None if json_output else Console(soft_wrap=True, highlight=False)
    with _errors():
        span_store = SpanStore(store)
        draft = span_store.read(labels_csv, name, max_file_mib, accept_unreviewed)
        _warn(draft.problems)
        if not draft.images:
            raise StoreError(
                f"nothing stored: none of the {len(draft.problems)} rows of {labels_csv} "
                "could be used"
            )
        check = _check_labels(store, draft, accept_disagreement, console)
        conflicts = span_store.conflicts(draft)
        _warn(conflicts)
        span = span_store.publish(draft)
    if console is None:
        checked = None if check is None else check.to_dict()
        extra = {"problems": draft.problems, "conflicts": conflicts, "label_check": checked}
        _echo_json({**span.to_dict(), **extra})
        return
    unreviewed = f", {span.unreviewed} unreviewed (train only)" if span.unreviewed else ""
    console.print(
        f"stored span {span.name}: {span.count} images ({_splits(span)} train/holdout"
        f"{unreviewed}), {len(draft.problems)} rows left out; per digit 0-9: {_per_digit(span)}"
    )


def _check_labels(
    store: str | None, draft: Draft, accept_disagreement: bool, console: Console | None
) -> LabelCheck | None:
    """Production's check of the draft's labels: its agreement in one line (unless --json),
    the images it contradicts as warnings; StoreError when it disagrees too much unless
    accepted. None when the store has no production model, or it cannot be loaded."""
    from model_store.spans.checks import check_with_production
    from model_store.spans.store import first_lines

    try:
        check = check_with_production(store, draft.x, draft.y)
    except CorruptVersion as error:
        _warn([f"labels not checked: {error}"])
        return None
    if console is not None:
        console.print(check.summary() if check else "labels not checked: no production model")
    if check is None:
        return None
    lines = [_suspect_line(draft, suspect, check.model) for suspect in check.suspects]
    _warn(first_lines(lines, "images it contradicts"))
    if check.refusal and not accept_disagreement:
        raise StoreError(f"nothing stored: {check.refusal}")
    return check


def _suspect_line(draft: Draft, suspect: Suspect, model: str) -> str:
    """`row 12 (scan.png): labelled 7, production v3 says 1 (0.998)`."""
    row = draft.images[suspect.index].row
    return (
        f"row {row.number} ({row.path}): labelled {suspect.label}, {model} says "
        f"{suspect.predicted} ({suspect.confidence:.3f})"
    )


def list_spans(
    store: StoreOption = None,
    json_output: JsonOption = False,
    include_retired: Annotated[bool, typer.Option("--all", help="Include removed spans.")] = False,
) -> None:
    """List labelled spans: name, created, images (train/holdout), per digit, removal; a torn
    span as a `corrupt` row and a warning."""
    from model_store.spans.records import TornSpan
    from model_store.spans.store import SpanStore

    with _errors():
        span_store = SpanStore(store)
        listing = span_store.listing(include_retired=include_retired)
    if json_output:
        _echo_json([entry.to_dict() for entry in [*listing.spans, *listing.torn]])
        _warn(entry.problem for entry in listing.torn if entry.retired_at is None)
        return
    removal = [Column("removed", overflow="fold", min_width=20)] if include_retired else []
    table = Table(
        Column("name", overflow="fold"),
        *(Column(name, no_wrap=True) for name in ("created", "images", "per digit 0-9")),
        *removal,
        title=f"labelled spans in {span_store.root} (images: train/holdout)",
    )
    for entry in [*listing.spans, *listing.torn]:
        if isinstance(entry, TornSpan):
            cells = [entry.name, "corrupt", "-", "-"]
        else:
            cells = [entry.name, _when(entry.created_at), _images(entry), _per_digit(entry)]
        table.add_row(*cells, *([_removal(entry)] if include_retired else []))
    Console().print(table)
    _warn(entry.problem for entry in listing.torn if entry.retired_at is None)


def remove(
    name: Annotated[str, typer.Argument(help="The span to remove.")],
    reason: Annotated[
        str | None, typer.Option(help="Why; recorded with the removal.", show_default=False)
    ] = None,
    store: StoreOption = None,
    json_output: JsonOption = False,
) -> None:
    """Remove a span from training: recorded, never erased (`data list --all` shows it).

    Says which registered versions were trained on it, and which aliases point to one of them.
    """
    from model_store.spans.store import SpanStore

    with _errors():
        entry = SpanStore(store).remove(
            name, reason=reason or "manual removal", actor=default_actor()
        )
        trained, aliases = _trained_on(store, name)
    if json_output:
        affected = {"trained_versions": trained, "aliases_trained_on_it": aliases}
        _echo_json({**entry.to_dict(), **affected})
        return
    console = Console(soft_wrap=True, highlight=False)
    console.print(f"removed span {entry.name} ({entry.retired_reason})")
    if trained:
        console.print(f"versions trained on it: {', '.join(label(v) for v in trained)}")
    for alias, version in aliases.items():
        console.print(
            f"{alias} {label(version)} was trained on it: the next nightly retrains without it"
        )


def _trained_on(store: str | None, name: str) -> tuple[list[int], dict[str, int]]:
    """The versions whose metadata lists span `name` among those they learned from, and the
    aliases that point to one of them."""
    models = ModelStore(store)
    trained = [v.version for v in models.list_versions() if name in v.card.span_names]
    return trained, {alias: v for alias, v in models.aliases().items() if v in trained}


def _images(span: Span) -> str:
    unreviewed = f", {span.unreviewed} unreviewed" if span.unreviewed else ""
    return f"{span.count} ({_splits(span)}{unreviewed})"


def _splits(span: Span) -> str:
    return f"{span.splits['train']}/{span.splits['holdout']}"


def _removal(entry: Span | TornSpan) -> str:
    if entry.retired_at is None:
        return ""
    return f"{_when(entry.retired_at)}\nby {entry.retired_by}\n{entry.retired_reason}"


def _per_digit(span: Span) -> str:
    return " ".join(str(span.per_digit[digit]) for digit in DIGITS)
