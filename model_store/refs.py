"""Parsing and validation of version numbers and alias names."""

from __future__ import annotations

import re

from model_store.errors import InvalidReference

_VERSION = re.compile(r"v?([1-9][0-9]{0,8})")
_VERSION_LIKE = re.compile(r"v?[0-9]+")
_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def _is_alias(name: str) -> bool:
    """Alias names: lowercase, no path characters, and never mistakable for a version."""
    return bool(_ALIAS.fullmatch(name)) and not _VERSION_LIKE.fullmatch(name)


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
    if _is_alias(ref):
        return ref
    raise InvalidReference(
        f"invalid reference {ref!r}: expected a version (7 or v7) or an alias name "
        "(lowercase letters, digits, '-' and '_')"
    )


def check_alias(name: str) -> None:
    """Reject names that cannot be aliases: version-like strings, path characters, capitals."""
    if not isinstance(name, str) or not _is_alias(name):
        raise InvalidReference(
            f"invalid alias {name!r}: use lowercase letters, digits, '-' and '_', "
            "starting with a letter and not of the form v7"
        )


def label(version: int | None) -> str:
    """Human form of a version number: `v7`, or `none` for an unset alias."""
    return "none" if version is None else f"v{version}"
