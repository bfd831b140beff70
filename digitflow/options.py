"""Option sets, each option declared once.

An option set is a frozen dataclass; each field is one option. The field gives its name, type
and default; `option()` adds the rest as the field's metadata: help, bounds, and its names where
they are not the usual ones (`--field_name` for argparse, `--field-name` for `digitflow`).
Every interface is derived from the fields, so adding an option is adding one field:

- argparse (`python -m beam_jobs.classify`, Beam's own option parser): `add_arguments`, and
  `from_namespace` for the option set argparse parsed;
- the set's own bounds, for a set built in code: `check_bounds`;
- `digitflow` commands (typer) and Prefect flows, with the fields as flat parameters:
  `flows.options.flat`.

`same_as` declares a field as another set's field, so one option can belong to two sets.
Standard library only: the CLI reads it at every start.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, TypeVar, get_args, get_type_hints

T = TypeVar("T")


@dataclass(frozen=True)
class Option:
    """What an option says besides its name, type and default."""

    help: str
    min: float | None = None
    max: float | None = None
    metavar: str | None = None
    cli: tuple[str, ...] = ()  # `digitflow` names, when not `--field-name`
    argument: bool = False  # a positional argument of `digitflow` commands
    flag: str | None = None  # the argparse name, when not `--field_name`


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


def same_as(options: type, name: str) -> Any:
    """A dataclass field declared as the option `name` of the set `options`: same default,
    help and bounds."""
    [item] = [item for item in fields(options) if item.name == name]
    return field(default=item.default, metadata=item.metadata)


def spec(item: Field) -> Option:
    return item.metadata["option"]


def value_type(options: type, item: Field) -> type:
    """The field's type, without `| None`."""
    kind = get_type_hints(options)[item.name]
    if type(None) in get_args(kind):
        [kind] = [arg for arg in get_args(kind) if arg is not type(None)]
    return kind


def flags(item: Field) -> list[str]:
    """The argparse names of an option."""
    names = [spec(item).flag or f"--{item.name}"]
    if "_" in item.name:
        names.append(f"--{item.name.replace('_', '-')}")
    return names


def out_of_bounds(value: Any, low: float | None, high: float | None) -> str | None:
    """Why `value` is outside [low, high] (None: unbounded), e.g. `must be at least 1, got 0`;
    None when it is inside."""
    if (low is None or value >= low) and (high is None or value <= high):
        return None
    if high is None:
        allowed = f"at least {low:g}"
    elif low is None:
        allowed = f"at most {high:g}"
    else:
        allowed = f"between {low:g} and {high:g}"
    return f"must be {allowed}, got {value}"


def bounded(
    convert: Callable[[str], Any], low: float | None, high: float | None
) -> Callable[[str], Any]:
    """An argparse type: `convert`, refusing values outside [low, high] (None: unbounded)."""
    if low is None and high is None:
        return convert

    def parse(text: str) -> Any:
        value = convert(text)
        if refused := out_of_bounds(value, low, high):
            raise argparse.ArgumentTypeError(refused)
        return value

    parse.__name__ = convert.__name__  # argparse names the type in its messages
    return parse


def check_bounds(options: Any) -> None:
    """ValueError, naming the option, for a value of the set outside its bounds (None passes)."""
    for item in fields(options):
        value, about = getattr(options, item.name), spec(item)
        if value is not None and (refused := out_of_bounds(value, about.min, about.max)):
            raise ValueError(f"{item.name} {refused}")


def add_arguments(parser: argparse.ArgumentParser, options: type) -> None:
    """One argparse option per field of the option set `options`, parsed to the field's name."""
    for item in fields(options):
        kind, about = value_type(options, item), spec(item)
        if kind is bool:
            parser.add_argument(*flags(item), dest=item.name, action="store_true", help=about.help)
            continue
        parser.add_argument(
            *flags(item),
            dest=item.name,
            type=bounded(kind, about.min, about.max),
            required=item.default is MISSING,
            default=None if item.default is MISSING else item.default,
            metavar=about.metavar,
            help=about.help,
        )


def from_namespace(options: type[T], namespace: argparse.Namespace) -> T:
    """The option set `options` as `add_arguments` parsed it."""
    return options(**{item.name: getattr(namespace, item.name) for item in fields(options)})
