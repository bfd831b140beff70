"""Parsing and validation of version numbers and alias names."""

from __future__ import annotations

import re

from model_store.errors import InvalidReference

_VERSION = re.compile(r"v?([1-9][0-9]{0,8})")
_VERSION_LIKE = re.compile(r"v?[0-9]+")
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
        if ref < 1:
            raise InvalidReference(f"invalid version {ref}: versions are numbered from 1")
        return ref
    if match := _VERSION.fullmatch(ref):
        return int(match.group(1))
    problem = _alias_problem(ref)
    if problem is None:
        return ref
    raise InvalidReference(
        f"invalid reference {ref!r}: expected a version (7 or v7) or an alias name ({problem})"
    )


def check_alias(name: str) -> None:
    """Reject names that cannot be aliases: version-like, reserved, path characters, capitals."""
    problem = _alias_problem(name) if isinstance(name, str) else "not a string"
    if problem is not None:
        raise InvalidReference(f"invalid alias {name!r}: {problem}")


def label(version: int | None) -> str:
    """Human form of a version number: `v7`, or `none` for an unset alias."""
    return "none" if version is None else f"v{version}"
