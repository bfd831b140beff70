"""Parsing and validation of version numbers and alias names."""

from __future__ import annotations

import re

from model_store.errors import InvalidReference

_VERSION_LIKE = re.compile(r"v?([0-9]+)")
MAX_VERSION = 999_999_999
"""The highest version number a reference can name: nine digits."""
_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,31}")
RESERVED_ALIASES = frozenset({"none", "any"})
"""Words the CLI and the API give a meaning (`--expected none`, `ANY`): never alias names."""


def _alias_problem(name: str) -> str | None:
    """Why `name` cannot be an alias, or None if it can."""
    if _VERSION_LIKE.fullmatch(name):
        return "it looks like a version (7 or v7)"
    if name in RESERVED_ALIASES:
        return f"{', '.join(sorted(RESERVED_ALIASES))} are reserved words"
    if not _ALIAS.fullmatch(name):
        return "use lowercase letters, digits, '-' and '_', starting with a letter"
    return None


def parse_ref(ref: str | int) -> int | str:
    """Return the version number (`7`, `"7"`, `"v7"`) or the alias name a reference names."""
    if isinstance(ref, bool) or not isinstance(ref, int | str):
        raise InvalidReference(f"invalid reference {ref!r}: expected a version number or an alias")
    if isinstance(ref, int):
        return _version(ref, label(ref))
    if match := _VERSION_LIKE.fullmatch(ref):
        digits = match.group(1).lstrip("0") or "0"
        too_long = len(digits) > len(str(MAX_VERSION))  # and maybe too long for int()
        return _version(MAX_VERSION + 1 if too_long else int(digits), ref)
    problem = _alias_problem(ref)
    if problem is None:
        return ref
    raise InvalidReference(
        f"invalid reference {ref!r}: expected a version (7 or v7) or an alias name ({problem})"
    )


def is_version(value: object) -> bool:
    """True for a version number as records hold it: an int (not a bool) from 1."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _version(number: int, written: str) -> int:
    """`number` if a version can have it, else InvalidReference saying plainly there is none."""
    if 1 <= number <= MAX_VERSION:
        return number
    why = "versions are numbered from 1" if number < 1 else f"versions stop at {MAX_VERSION:,}"
    raise InvalidReference(f"version {written} does not exist: {why}")


def check_alias(name: str) -> None:
    """Reject names that cannot be aliases: version-like, reserved, path characters, capitals."""
    problem = _alias_problem(name) if isinstance(name, str) else "not a string"
    if problem is not None:
        raise InvalidReference(f"invalid alias {name!r}: {problem}")


def label(version: int | None) -> str:
    """Human form of a version number: `v7`, or `none` for an unset alias."""
    return "none" if version is None else f"v{version}"
