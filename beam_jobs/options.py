"""Option sets, each declared once, and the bulk classification's set.

An option set is a frozen dataclass; each field is one option. The field gives its name, type
and default; `option()` adds the rest as the field's metadata: help, bounds, and its names where
they are not the usual ones (`--field_name` for the Beam job, `--field-name` for `digitflow`).
Every interface is derived from the fields, so adding an option is adding one field:

- the Beam job's argparse options: `add_arguments`; `to_argv` writes a set back as those options
  (how `digitflow classify` and the `classify-folder` flow launch the job);
- `digitflow` commands (typer) and Prefect flows, with the fields as flat parameters:
  `flows.options.flat`.

`ClassifyOptions` lives here, in the lower layer, because the Beam job parses it; the retrain set
is `flows.options.RetrainOptions`. Cheap to import (standard library only): the CLI reads it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, get_args, get_type_hints

from digitflow.config import LOW_CONFIDENCE
from digitflow.listing import MAX_FILE_MIB

STORE_HELP = "Model store (default: $DIGITFLOW_STORE or $DIGITFLOW_HOME/models)."


@dataclass(frozen=True)
class Option:
    """What an option says besides its name, type and default."""

    help: str
    min: float | None = None
    max: float | None = None
    metavar: str | None = None
    cli: tuple[str, ...] = ()  # `digitflow` names, when not `--field-name`
    argument: bool = False  # a positional argument of `digitflow` commands
    flag: str | None = None  # the Beam job's name, when not `--field_name`


def option(
    default: Any = MISSING,
    *,
    help: str,
    min: float | None = None,
    max: float | None = None,
    metavar: str | None = None,
    cli: tuple[str, ...] = (),
    argument: bool = False,
    flag: str | None = None,
) -> Any:
    """A dataclass field that is an option (no `default`: a required one)."""
    about = Option(help, min, max, metavar, cli, argument, flag)
    return field(default=default, metadata={"option": about})


def spec(item: Field) -> Option:
    return item.metadata["option"]


def value_type(options: type, item: Field) -> type:
    """The field's type, without `| None`."""
    kind = get_type_hints(options)[item.name]
    if type(None) in get_args(kind):
        [kind] = [arg for arg in get_args(kind) if arg is not type(None)]
    return kind


def flags(item: Field) -> list[str]:
    """The Beam job's names of an option: the first is the one `to_argv` writes."""
    names = [spec(item).flag or f"--{item.name}"]
    if "_" in item.name:
        names.append(f"--{item.name.replace('_', '-')}")
    return names


def bounded(
    convert: Callable[[str], Any], low: float | None, high: float | None
) -> Callable[[str], Any]:
    """An argparse type: `convert`, refusing values outside [low, high] (None: unbounded)."""
    if low is None and high is None:
        return convert
    if high is None:
        allowed = f"at least {low:g}"
    elif low is None:
        allowed = f"at most {high:g}"
    else:
        allowed = f"between {low:g} and {high:g}"

    def parse(text: str) -> Any:
        value = convert(text)
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value

    parse.__name__ = convert.__name__  # argparse names the type in its messages
    return parse


def add_arguments(parser: argparse.ArgumentParser, options: type) -> None:
    """One argparse option per field of the option set `options`."""
    for item in fields(options):
        kind, about = value_type(options, item), spec(item)
        if kind is bool:
            parser.add_argument(*flags(item), action="store_true", help=about.help)
            continue
        parser.add_argument(
            *flags(item),
            type=bounded(kind, about.min, about.max),
            required=item.default is MISSING,
            default=None if item.default is MISSING else item.default,
            metavar=about.metavar,
            help=about.help,
        )


def to_argv(options: Any) -> list[str]:
    """An option set's values as the command line `add_arguments` parses (None: left out)."""
    args: list[str] = []
    for item in fields(options):
        value = getattr(options, item.name)
        if isinstance(value, bool):
            args += [flags(item)[0]] if value else []
        elif value is not None:
            args += [flags(item)[0], str(value)]
    return args


@dataclass(frozen=True)
class ClassifyOptions:
    """One bulk classification: what to read, where to write, with which model.

    The Beam job's tuning options (`--batch_size`, `--progress_s`) are its own, not here.
    """

    source: str = option(
        help="Folder (searched recursively), glob, or gs:// / s3:// prefix.",
        argument=True,
        metavar="INPUT",
        flag="--input",
    )
    output: str = option(
        help="Results CSV; failures go to PATH.errors.csv.",
        cli=("--output", "-o"),
        metavar="PATH.csv",
    )
    model: str = option("production", help="Alias, version (7, v7) or a .keras file.")
    store: str | None = option(None, help=STORE_HELP, metavar="URI")
    shards: int = option(1, help="Write N result files (big jobs), each with a header.", min=1)
    min_confidence: float = option(
        LOW_CONFIDENCE, help="Rows below it get low_confidence=true.", min=0.0, max=1.0
    )
    overwrite: bool = option(False, help="Replace existing results and errors files.")
    drift_psi: float = option(
        0.25,
        help="Drift: highest population stability index of the predicted digits' mix "
        "against the model's reference profile.",
        min=0.0,
    )
    drift_low_confidence_ratio: float = option(
        3.0, help="Drift: highest low-confidence rate, as a multiple of the reference's.", min=0.0
    )
    drift_min_images: int = option(
        100, help="Drift: check only runs of at least N classified images.", min=1
    )
    max_file_mib: int = option(
        MAX_FILE_MIB, help="Files larger than N MiB are errors, refused unread.", min=1
    )
