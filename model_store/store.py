"""The model store: immutable numbered versions, aliases switched by compare-and-swap, history.

Layout under the root (local directory or object-store prefix):

    versions/<n>/model.keras     the model, copied in at registration
    versions/<n>/metadata.json   written last: a version without it does not exist yet
    aliases.json                 {"production": {"version": 7, "previous": [5, 6]}, ...}
    history.jsonl                one JSON line per alias change (object stores: history/*.json)

Nothing is locked across a change: each is a read-modify-write whose write succeeds only if
its object did not change since it was read (compare-and-swap), retried when it did.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from digitflow import config
from model_store.card import SCHEMA_VERSION, InvalidCard, ModelCard
from model_store.errors import (
    AliasNotFound,
    CorruptVersion,
    InvalidReference,
    PromotionConflict,
    StoreError,
    VersionNotFound,
)
from model_store.files import ChecksumMismatch, WriteConflict, copy_stream, is_uri, sha256_file
from model_store.keras_file import describe, read_config
from model_store.metadata import code_version, complete, library_versions, now_iso, to_json
from model_store.records import (
    CorruptEntry,
    HistoryEntry,
    HistoryLog,
    ModelVersion,
    ResolvedModel,
    VersionListing,
)
from model_store.refs import check_alias, is_version, label, parse_ref
from model_store.storage import Storage, open_storage
from model_store.validation import validate

if TYPE_CHECKING:
    import keras

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
ALIASES_FILE = "aliases.json"
_VERSION_DIR = re.compile(r"[1-9][0-9]*")
FIXED_METADATA = frozenset({"version", "model_sha256", "created_at", "schema_version"})
"""Metadata keys set at registration that `annotate` never changes."""
_SNIPPET = 60  # characters of an unreadable history entry quoted in its problem
_ROUNDS = 30
"""Conditional writes a change tries before giving up: each lost one means another succeeded."""
_BACKOFF_S = 0.005  # the longest random pause after the first lost round; doubles up to x64
_T = TypeVar("_T")


class _Unchecked(Enum):
    ANY = "ANY"


ANY = _Unchecked.ANY
"""`promote(expected=ANY)`: switch the alias whatever it points to now."""

Expected = int | str | Literal[_Unchecked.ANY] | None
_Wanted = int | Literal[_Unchecked.ANY] | None  # `Expected` with the version parsed


def default_root() -> str:
    """`$DIGITFLOW_STORE`, else `$DIGITFLOW_HOME/models`."""
    return os.environ.get("DIGITFLOW_STORE") or str(config.home() / "models")


class ModelStore:
    """Versioned Keras models under a local directory or an object-store URI."""

    def __init__(
        self, root: str | os.PathLike[str] | None = None, *, storage: Storage | None = None
    ) -> None:
        location = os.fspath(root) if root is not None else default_root()
        self._storage = storage or open_storage(location)
        self.root = self._storage.root

    # --- versions -------------------------------------------------------------------------

    def register(
        self, model_path: str | Path, metadata: ModelCard | Mapping[str, Any]
    ) -> ModelVersion:
        """Copy a `.keras` file in as the next version; it appears only once complete.

        `metadata` is the version's model card, or a dict of it (any shape `ModelCard.from_dict`
        reads); a bad value is refused with InvalidCard (a StoreError) before anything is
        copied. The store sets `version` and `model_sha256`, and fills `created_at`,
        `architecture`, `code_version` and `library_versions` when they are not given. The
        copy must pass infra validation (`model_store.validation`), else InvalidModel.
        """
        source = Path(model_path)
        if not source.exists():
            raise StoreError(f"model file not found: {source}")
        if source.is_dir():
            raise StoreError(f"{source} is a directory; register a zipped .keras file")
        card = _new_card(metadata)
        with self._storage.staging() as staged:
            with source.open("rb") as src, (staged / MODEL_FILE).open("wb") as dst:
                sha256 = copy_stream(src, dst)
            # Check the copy, not the source: it is what readers will get.
            model_config = read_config(staged / MODEL_FILE, str(source))
            validate(staged / MODEL_FILE, str(source))
            architecture = card.architecture or describe(model_config)
            card = replace(card, model_sha256=sha256, architecture=architecture)
            record = card.to_dict()
            numbers = itertools.count(max(self._numbers(), default=0) + 1)
            version = self._retried(
                "versions/", lambda: self._publish(staged, record, next(numbers))
            )
        return self.get(version)

    def list_versions(self) -> list[ModelVersion]:
        """Every complete, readable version, oldest first; `listing` also gives corrupt ones."""
        return self.listing().versions

    def listing(self) -> VersionListing:
        """Every complete version, oldest first; corrupt metadata is reported, not fatal."""
        table = self._alias_table()
        versions, corrupt = [], []
        for number in sorted(self._numbers()):
            try:
                metadata = self._metadata(number)
            except CorruptVersion as exc:
                corrupt.append(CorruptEntry(number, _aliases_of(number, table), str(exc)))
                continue
            if metadata is not None:
                versions.append(self._version(number, metadata, table))
        return VersionListing(versions, corrupt)

    def get(self, ref: str | int) -> ModelVersion:
        """The version named by `7`, `"7"`, `"v7"` or an alias."""
        parsed = parse_ref(ref)
        table = self._alias_table()
        if isinstance(parsed, str):
            if parsed not in table:
                known = ", ".join(sorted(table)) or "none"
                raise AliasNotFound(f"unknown alias {parsed!r} (known aliases: {known})")
            parsed = table[parsed]["version"]
        metadata = self._metadata(parsed)
        if metadata is None:
            raise VersionNotFound(f"version {label(parsed)} does not exist in {self.root}")
        return self._version(parsed, metadata, table)

    def resolve(self, ref: str | int | os.PathLike[str]) -> ResolvedModel:
        """A version, an alias or a `.keras` path outside pinned to a local file and its sha256.

        A version's file is fetched (object stores: once, into the cache) and checked against
        the sha256 recorded at registration; a file outside is hashed as it is now.
        """
        if isinstance(ref, os.PathLike) or (isinstance(ref, str) and ref.endswith(".keras")):
            return _resolve_file(os.fspath(ref))
        version = self.get(ref)
        return ResolvedModel(
            version.version, self._model_file(version), version.model_uri, version.metadata
        )

    def annotate(self, ref: str | int, updates: dict[str, Any]) -> ModelVersion:
        """Merge `updates` into a version's metadata as top-level keys, in one atomic rewrite.

        For facts learned after registration, such as a lost promotion race. A conditional
        write, retried on a concurrent change, so no update is lost; the model file and the
        keys in FIXED_METADATA never change.
        """
        if not isinstance(updates, dict) or not all(isinstance(key, str) for key in updates):
            raise StoreError("annotations must be a dict with string keys")
        if fixed := sorted(FIXED_METADATA & updates.keys()):
            raise StoreError(f"cannot annotate {', '.join(fixed)}: set once at registration")
        number = self.get(ref).version
        name = f"versions/{number}/{METADATA_FILE}"

        def merge() -> None:
            metadata, token = self._read_metadata(number)
            if metadata is None:
                raise VersionNotFound(f"version {label(number)} does not exist in {self.root}")
            record = {**metadata, **updates}
            _card_of(record)
            self._storage.write_if(name, _encode(record), token, history=None)

        self._retried(name, merge)
        return self.get(number)

    def check_writable(self) -> None:
        """StoreError, in one line, unless this store can take versions and alias changes.

        Cheap enough to run before hours of training: creates the root directory (and its
        missing parents) if needed and nothing else, and reads the alias table.
        """
        self._storage.check_writable()
        self._alias_table()

    def load_model(self, ref: str | int | os.PathLike[str]) -> keras.Model:
        """Load a resolved model with Keras' safe mode; CorruptVersion if Keras cannot."""
        from digitflow.models import ModelLoadError, load_model

        resolved = self.resolve(ref)
        try:
            return load_model(resolved.local_path)
        except ModelLoadError as exc:
            what = resolved.uri if resolved.version is None else label(resolved.version)
            raise CorruptVersion(f"{what}: {exc}") from None

    # --- aliases --------------------------------------------------------------------------

    def aliases(self) -> dict[str, int]:
        """Alias name -> version number."""
        return {name: entry["version"] for name, entry in self._alias_table().items()}

    def promote(
        self,
        ref: str | int,
        *,
        alias: str = "production",
        expected: Expected = ANY,
        reason: str,
        actor: str,
    ) -> HistoryEntry:
        """Point `alias` at a version; `expected` is the version it must point to now (CAS).

        The version's model must pass infra validation (`model_store.validation`) first.
        """
        _check_change(alias, reason, actor)
        want = _expected_version(expected)
        target = self.get(ref)
        model = self._model_file(target)  # present and unchanged since registration
        _check_switch(self._alias_table(), alias, want, target.version)  # fails fast, no Keras
        validate(model, label(target.version))

        def switch(table: dict[str, Any]) -> HistoryEntry:
            before = _check_switch(table, alias, want, target.version)
            current = table.get(alias)
            previous = [*current["previous"], before] if current else []
            table[alias] = {"version": target.version, "previous": previous}
            return HistoryEntry(alias, before, target.version, reason, actor, now_iso(), "promote")

        return self._change_aliases(switch)

    def rollback(self, *, alias: str = "production", reason: str, actor: str) -> HistoryEntry:
        """Point `alias` back at the version it pointed to before its last promotion."""
        _check_change(alias, reason, actor)

        def switch_back(table: dict[str, Any]) -> HistoryEntry:
            if alias not in table:
                raise AliasNotFound(f"unknown alias {alias!r}")
            current = table[alias]
            if not current["previous"]:
                raise StoreError(f"{alias} has no previous version to roll back to")
            *older, target = current["previous"]
            self._model_file(self.get(target))
            table[alias] = {"version": target, "previous": older}
            before = current["version"]
            return HistoryEntry(alias, before, target, reason, actor, now_iso(), "rollback")

        return self._change_aliases(switch_back)

    def history(self, alias: str | None = None) -> list[HistoryEntry]:
        """Every readable alias change, oldest first; `history_log` also says what was skipped."""
        return self.history_log(alias).entries

    def history_log(self, alias: str | None = None) -> HistoryLog:
        """Every alias change, oldest first (only `alias`'s if given), and unreadable entries.

        An unreadable entry is skipped and reported, never fatal: the last one is typically a
        write cut short by a crash; one elsewhere is damage. The alias table, not the history,
        decides what production is.
        """
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

    # --- internals ------------------------------------------------------------------------

    def _numbers(self) -> list[int]:
        """Numbers of all version directories, complete or not."""
        names = self._storage.children("versions")
        return [int(name) for name in names if _VERSION_DIR.fullmatch(name)]

    def _metadata(self, number: int) -> dict[str, Any] | None:
        """A version's metadata; None if it is not (yet) complete; CorruptVersion if bad."""
        return self._read_metadata(number)[0]

    def _read_metadata(self, number: int) -> tuple[dict[str, Any] | None, str | None]:
        """`_metadata` and the token to rewrite it conditionally."""
        try:
            raw, token = self._storage.read_versioned(f"versions/{number}/{METADATA_FILE}")
        except OSError as exc:  # e.g. a directory in its place, or no permission
            reason = exc.strerror or type(exc).__name__
            raise CorruptVersion(
                f"{label(number)}: {METADATA_FILE} cannot be read ({reason})"
            ) from None
        if raw is None:
            return None, token
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise CorruptVersion(
                f"{label(number)}: {METADATA_FILE} is not valid JSON ({exc})"
            ) from None
        problem = _metadata_problem(number, data)
        if problem is None:
            try:
                ModelCard.from_dict(data)
            except InvalidCard as exc:
                problem = str(exc)
        if problem:
            raise CorruptVersion(f"{label(number)}: {METADATA_FILE} is corrupt: {problem}")
        return data, token

    def _version(
        self, number: int, metadata: dict[str, Any], table: dict[str, Any]
    ) -> ModelVersion:
        return ModelVersion(
            version=number,
            created_at=metadata["created_at"],
            metrics={"accuracy": None, **metadata["metrics"]},
            aliases=_aliases_of(number, table),
            metadata=metadata,
            model_uri=self._storage.uri(f"versions/{number}/{MODEL_FILE}"),
        )

    def _model_file(self, version: ModelVersion) -> Path:
        """The version's model as a local file whose sha256 matches its metadata."""
        name = f"versions/{version.version}/{MODEL_FILE}"
        try:
            return self._storage.fetch(name, version.metadata["model_sha256"])
        except FileNotFoundError:
            raise CorruptVersion(
                f"{label(version.version)}: model file is missing ({version.model_uri})"
            ) from None
        except ChecksumMismatch:
            raise CorruptVersion(
                f"{label(version.version)}: model file is corrupt, its sha256 does not match "
                f"the one recorded at registration ({version.model_uri})"
            ) from None

    def _alias_table(self) -> dict[str, Any]:
        return self._parse_aliases(self._storage.read_versioned(ALIASES_FILE)[0])

    def _parse_aliases(self, raw: bytes | None) -> dict[str, Any]:
        if raw is None:
            return {}
        try:
            table = json.loads(raw)
        except ValueError:
            table = None
        if not _valid_alias_table(table):
            raise StoreError(f"{self._storage.uri(ALIASES_FILE)} is corrupt")
        return table

    def _change_aliases(self, change: Callable[[dict[str, Any]], HistoryEntry]) -> HistoryEntry:
        """Apply `change` to the alias table in one compare-and-swap, then record the change.

        `change` edits the table it is given and returns the history entry; it runs again on
        the new table when a concurrent writer changed it first, and may raise to give up.
        """

        def attempt() -> HistoryEntry:
            raw, token = self._storage.read_versioned(ALIASES_FILE)
            table = self._parse_aliases(raw)
            entry = change(table)
            line = json.dumps(entry.to_dict(), sort_keys=True)
            self._storage.write_if(ALIASES_FILE, _encode(table), token, history=line)
            return entry

        return self._retried(ALIASES_FILE, attempt)

    def _publish(self, staged: Path, record: dict[str, Any], version: int) -> int:
        """Publish the staged version as `version`; WriteConflict if that number is taken."""
        record["version"] = version
        (staged / METADATA_FILE).write_bytes(_encode(record))
        self._storage.publish(staged, f"versions/{version}", marker=METADATA_FILE)
        return version

    def _retried(self, name: str, attempt: Callable[[], _T]) -> _T:
        """`attempt()`, a conditional write of `name`, repeated while it loses to another."""
        for lost in range(_ROUNDS):
            try:
                return attempt()
            except WriteConflict:
                time.sleep(random.uniform(0, _BACKOFF_S * 2 ** min(lost, 6)))
        raise StoreError(
            f"{self._storage.uri(name)} kept changing: {_ROUNDS} concurrent writes won over "
            "this one; nothing changed, try again"
        )


def _resolve_file(ref: str) -> ResolvedModel:
    """A `.keras` file outside the store, checked to be a Keras archive, with its sha256."""
    if is_uri(ref):
        raise InvalidReference(f"{ref}: register remote model files in a store and use --store")
    path = Path(ref).expanduser().absolute()
    if not path.is_file():
        raise StoreError(f"model file not found: {path}")
    read_config(path, str(path))
    return ResolvedModel(None, path, str(path), {"model_sha256": sha256_file(path)})


def _aliases_of(number: int, table: dict[str, Any]) -> tuple[str, ...]:
    """The aliases that point to version `number`, sorted."""
    return tuple(sorted(alias for alias, entry in table.items() if entry["version"] == number))


def _history_problem(number: int, total: int, line: str, exc: Exception) -> str:
    """One line on an unreadable history entry, quoting its start so a person can find it."""
    where = "the last, probably cut short by a crash" if number == total else f"of {total}"
    snippet = line[:_SNIPPET] + ("..." if len(line) > _SNIPPET else "")
    return f"history entry {number} ({where}) is unreadable and skipped: {snippet!r} ({exc!r})"


def _card_of(metadata: Any) -> ModelCard:
    """The card of a metadata dict; InvalidCard, naming the field, if a value is bad."""
    if isinstance(metadata, ModelCard):
        return metadata
    if not isinstance(metadata, Mapping):
        raise InvalidCard(f"metadata must be a ModelCard or a dict, got {type(metadata).__name__}")
    return ModelCard.from_dict(metadata)


def _new_card(metadata: ModelCard | Mapping[str, Any]) -> ModelCard:
    """The card a registration writes: the caller's, provenance filled in, in today's schema.

    InvalidCard for a bad value, StoreError for one that is not plain JSON (NaN, an object).
    """
    if isinstance(metadata, ModelCard):
        card = metadata
        if card.created_at is None:
            card = replace(card, created_at=now_iso())
        if card.library_versions is None:
            known = card.code_version or code_version()
            card = replace(card, library_versions=library_versions(), code_version=known)
    else:
        _card_of(metadata)  # a bad value is named as the caller gave it
        card = _card_of(complete({"schema_version": SCHEMA_VERSION, **metadata}))
    _encode(card.to_dict())
    return card


def _check_change(alias: str, reason: str, actor: str) -> None:
    """Validate the parts of an alias change that come from the caller."""
    check_alias(alias)
    if not reason.strip() or not actor.strip():
        raise StoreError("an alias change needs a non-empty reason and actor")


def _check_switch(table: dict[str, Any], alias: str, want: _Wanted, target: int) -> int | None:
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


def _expected_version(expected: Expected) -> _Wanted:
    """Normalise `expected`: ANY, None (alias must be unset) or a version number."""
    if expected is ANY or expected is None:
        return expected
    parsed = parse_ref(expected)
    if isinstance(parsed, str):
        raise InvalidReference(f"expected must be a version number, got {expected!r}")
    return parsed


def _metadata_problem(number: int, data: Any) -> str | None:
    """Why `data` is not valid metadata for version `number`, or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if not is_version(data.get("version")) or data["version"] != number:
        return f"it records version {data.get('version')!r}"
    if not isinstance(data.get("model_sha256"), str):
        return "model_sha256 is missing"
    if not isinstance(data.get("created_at"), str):
        return "created_at is missing"
    if not isinstance(data.get("metrics"), dict):
        return "metrics is not an object"
    return None


def _valid_alias_table(table: Any) -> bool:
    def valid(entry: Any) -> bool:
        return (
            isinstance(entry, dict)
            and is_version(entry.get("version"))
            and isinstance(entry.get("previous"), list)
            and all(is_version(v) for v in entry["previous"])
        )

    return isinstance(table, dict) and all(valid(entry) for entry in table.values())


def _encode(value: Any) -> bytes:
    try:
        return to_json(value)
    except ValueError as exc:
        raise StoreError(f"cannot store as JSON: {exc}") from None
