"""Aliases: `aliases.json`, the table of named pointers to versions with their rollback stacks,
changed only by compare-and-swap, and the history of those changes.

    aliases.json    {"production": {"version": 7, "previous": [5, 6]}, ...}
    history.jsonl   one JSON line per alias change (object stores: history/*.json)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import Enum
from typing import Any, Literal

from model_store.conditional_writes import encode, retried
from model_store.errors import AliasNotFound, InvalidReference, PromotionConflict, StoreError
from model_store.metadata import now_iso
from model_store.records import HistoryEntry, HistoryLog
from model_store.refs import check_alias, is_version, label, parse_ref
from model_store.storage import Storage

ALIASES_FILE = "aliases.json"
_SNIPPET = 60  # characters of an unreadable history entry quoted in its problem


class _Unchecked(Enum):
    ANY = "ANY"


ANY = _Unchecked.ANY
"""`promote(expected=ANY)`: switch the alias whatever it points to now."""

Expected = int | str | Literal[_Unchecked.ANY] | None
_Wanted = int | Literal[_Unchecked.ANY] | None  # `Expected` with the version parsed


class AliasTable:
    """A store's alias table and alias history, on its `Storage`."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def read(self) -> dict[str, Any]:
        """Alias name -> {"version": n, "previous": [...]}; StoreError if the file is corrupt."""
        return self._parse(self._storage.read_versioned(ALIASES_FILE)[0])

    def promote(
        self, alias: str, want: _Wanted, target: int, reason: str, actor: str
    ) -> HistoryEntry:
        """Point `alias` at `target` if it points to `want` (CAS), pushing the old version."""

        def switch(table: dict[str, Any]) -> HistoryEntry:
            before = check_switch(table, alias, want, target)
            current = table.get(alias)
            previous = [*current["previous"], before] if current else []
            table[alias] = {"version": target, "previous": previous}
            return HistoryEntry(alias, before, target, reason, actor, now_iso(), "promote")

        return self._change(switch)

    def rollback(
        self, alias: str, reason: str, actor: str, verify: Callable[[int], object]
    ) -> HistoryEntry:
        """Point `alias` at the top of its rollback stack, popping it; `verify(version)` runs
        on the target first and may raise to give up."""

        def switch_back(table: dict[str, Any]) -> HistoryEntry:
            if alias not in table:
                raise AliasNotFound(f"unknown alias {alias!r}")
            current = table[alias]
            if not current["previous"]:
                raise StoreError(f"{alias} has no previous version to roll back to")
            *older, target = current["previous"]
            verify(target)
            table[alias] = {"version": target, "previous": older}
            before = current["version"]
            return HistoryEntry(alias, before, target, reason, actor, now_iso(), "rollback")

        return self._change(switch_back)

    def history(self, alias: str | None = None) -> HistoryLog:
        """Every alias change, oldest first (only `alias`'s if given); each unreadable entry
        skipped and reported in one line (see `ModelStore.history_log`)."""
        if alias is not None:
            check_alias(alias)
        lines = self._storage.read_history()
        entries, problems = [], []
        for number, line in enumerate(lines, start=1):
            try:
                entry = HistoryEntry.from_dict(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(_history_problem(number, len(lines), line, exc))
                continue
            if alias is None or entry.alias == alias:
                entries.append(entry)
        return HistoryLog(entries, problems)

    def _parse(self, raw: bytes | None) -> dict[str, Any]:
        if raw is None:
            return {}
        try:
            table = json.loads(raw)
        except ValueError:
            table = None
        if not _valid_alias_table(table):
            raise StoreError(f"{self._storage.uri(ALIASES_FILE)} is corrupt")
        return table

    def _change(self, change: Callable[[dict[str, Any]], HistoryEntry]) -> HistoryEntry:
        """Apply `change` to the alias table in one compare-and-swap, then record the change.

        `change` edits the table it is given and returns the history entry; it runs again on
        the new table when a concurrent writer changed it first, and may raise to give up.
        """

        def attempt() -> HistoryEntry:
            raw, token = self._storage.read_versioned(ALIASES_FILE)
            table = self._parse(raw)
            entry = change(table)
            line = json.dumps(entry.to_dict(), sort_keys=True)
            self._storage.write_if(ALIASES_FILE, encode(table), token, history=line)
            return entry

        return retried(self._storage, ALIASES_FILE, attempt)


def aliases_of(number: int, table: dict[str, Any]) -> tuple[str, ...]:
    """The aliases that point to version `number`, sorted."""
    return tuple(sorted(alias for alias, entry in table.items() if entry["version"] == number))


def check_change(alias: str, reason: str, actor: str) -> None:
    """Validate the parts of an alias change that come from the caller."""
    check_alias(alias)
    if not reason.strip() or not actor.strip():
        raise StoreError("an alias change needs a non-empty reason and actor")


def check_switch(table: dict[str, Any], alias: str, want: _Wanted, target: int) -> int | None:
    """The version `alias` points to in `table`, if it may be switched to `target`."""
    current = table.get(alias)
    before = current["version"] if current else None
    if want is not ANY and want != before:
        raise PromotionConflict(
            f"{alias} points to {label(before)}, not the expected {label(want)}; nothing changed"
        )
    if before == target:
        raise StoreError(f"{alias} already points to {label(before)}; nothing changed")
    return before


def expected_version(expected: Expected) -> _Wanted:
    """Normalise `expected`: ANY, None (alias must be unset) or a version number."""
    if expected is ANY or expected is None:
        return expected
    parsed = parse_ref(expected)
    if isinstance(parsed, str):
        raise InvalidReference(f"expected must be a version number, got {expected!r}")
    return parsed


def _history_problem(number: int, total: int, line: str, exc: Exception) -> str:
    """One line on an unreadable history entry, quoting its start so a person can find it."""
    where = "the last, probably cut short by a crash" if number == total else f"of {total}"
    snippet = line[:_SNIPPET] + ("..." if len(line) > _SNIPPET else "")
    return f"history entry {number} ({where}) is unreadable and skipped: {snippet!r} ({exc!r})"


def _valid_alias_table(table: Any) -> bool:
    def valid(entry: Any) -> bool:
        return (
            isinstance(entry, dict)
            and is_version(entry.get("version"))
            and isinstance(entry.get("previous"), list)
            and all(is_version(v) for v in entry["previous"])
        )

    return isinstance(table, dict) and all(valid(entry) for entry in table.values())
