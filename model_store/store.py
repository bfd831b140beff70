"""The model store: immutable numbered versions (`versions`), aliases switched by
compare-and-swap and their history (`aliases`), behind one API, `ModelStore`.

Layout under the root (local directory or object-store prefix):

    versions/<n>/model.keras     the model, copied in at registration
    versions/<n>/metadata.json   written last: a version without it does not exist yet
    aliases.json                 {"production": {"version": 7, "previous": [5, 6]}, ...}
    history.jsonl                one JSON line per alias change (object stores: history/*.json)

Nothing is locked across a change: each is a read-modify-write whose write succeeds only if
its object did not change since it was read (compare-and-swap), retried when it did.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitflow import config, locations
from digitflow.locations import sha256_file
from model_store.aliases import (
    ANY,
    AliasTable,
    Expected,
    aliases_of,
    check_change,
    check_switch,
    expected_version,
)
from model_store.card import ModelCard
from model_store.errors import (
    AliasNotFound,
    CorruptVersion,
    InvalidReference,
    StoreError,
    VersionNotFound,
)
from model_store.keras_file import read_config
from model_store.records import (
    CorruptEntry,
    HistoryEntry,
    HistoryLog,
    ModelVersion,
    ResolvedModel,
    VersionListing,
)
from model_store.refs import label, parse_ref
from model_store.storage import Storage, open_storage
from model_store.validation import validate
from model_store.versions import Versions, check_annotations

if TYPE_CHECKING:
    import keras


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
        self._versions = Versions(self._storage)
        self._aliases = AliasTable(self._storage)

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
        return self.get(self._versions.register(Path(model_path), metadata))

    def list_versions(self) -> list[ModelVersion]:
        """Every complete, readable version, oldest first; `listing` also gives corrupt ones."""
        return self.listing().versions

    def listing(self) -> VersionListing:
        """Every complete version, oldest first; corrupt metadata is reported, not fatal."""
        table = self._aliases.read()
        versions, corrupt = [], []
        for number in sorted(self._versions.numbers()):
            try:
                metadata = self._versions.metadata(number)
            except CorruptVersion as exc:
                corrupt.append(CorruptEntry(number, aliases_of(number, table), str(exc)))
                continue
            if metadata is not None:
                aliases = aliases_of(number, table)
                versions.append(self._versions.version(number, metadata, aliases))
        return VersionListing(versions, corrupt)

    def get(self, ref: str | int) -> ModelVersion:
        """The version named by `7`, `"7"`, `"v7"` or an alias."""
        parsed = parse_ref(ref)
        table = self._aliases.read()
        if isinstance(parsed, str):
            if parsed not in table:
                known = ", ".join(sorted(table)) or "none"
                raise AliasNotFound(f"unknown alias {parsed!r} (known aliases: {known})")
            parsed = table[parsed]["version"]
        metadata = self._versions.metadata(parsed)
        if metadata is None:
            raise VersionNotFound(f"version {label(parsed)} does not exist in {self.root}")
        return self._versions.version(parsed, metadata, aliases_of(parsed, table))

    def resolve(self, ref: str | int | os.PathLike[str]) -> ResolvedModel:
        """A version, an alias or a `.keras` path outside pinned to a local file and its sha256.

        A version's file is fetched (object stores: once, into the cache) and checked against
        the sha256 recorded at registration; a file outside is hashed as it is now.
        """
        if isinstance(ref, os.PathLike) or (isinstance(ref, str) and ref.endswith(".keras")):
            return _resolve_file(os.fspath(ref))
        version = self.get(ref)
        return ResolvedModel(
            version.version, self._versions.model_file(version), version.model_uri, version.metadata
        )

    def annotate(self, ref: str | int, updates: dict[str, Any]) -> ModelVersion:
        """Merge `updates` into a version's metadata as top-level keys, in one atomic rewrite.

        For facts learned after registration, such as a lost promotion race. A conditional
        write, retried on a concurrent change, so no update is lost; the model file and the
        keys in FIXED_METADATA never change.
        """
        check_annotations(updates)
        number = self.get(ref).version
        self._versions.annotate(number, updates)
        return self.get(number)

    def check_writable(self) -> None:
        """StoreError, in one line, unless this store can take versions and alias changes.

        Cheap enough to run before hours of training: creates the root directory (and its
        missing parents) if needed and nothing else, and reads the alias table.
        """
        self._storage.check_writable()
        self._aliases.read()

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
        return {name: entry["version"] for name, entry in self._aliases.read().items()}

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
        check_change(alias, reason, actor)
        want = expected_version(expected)
        target = self.get(ref)
        model = self._versions.model_file(target)  # present and unchanged since registration
        check_switch(self._aliases.read(), alias, want, target.version)  # fails fast, no Keras
        validate(model, label(target.version))
        return self._aliases.promote(alias, want, target.version, reason, actor)

    def rollback(self, *, alias: str = "production", reason: str, actor: str) -> HistoryEntry:
        """Point `alias` back at the version it pointed to before its last promotion."""
        check_change(alias, reason, actor)
        return self._aliases.rollback(
            alias, reason, actor, lambda target: self._versions.model_file(self.get(target))
        )

    def history(self, alias: str | None = None) -> list[HistoryEntry]:
        """Every readable alias change, oldest first; `history_log` also says what was skipped."""
        return self.history_log(alias).entries

    def history_log(self, alias: str | None = None) -> HistoryLog:
        """Every alias change, oldest first (only `alias`'s if given), and unreadable entries.

        An unreadable entry is skipped and reported, never fatal: the last one is typically a
        write cut short by a crash; one elsewhere is damage. The alias table, not the history,
        decides what production is.
        """
        return self._aliases.history(alias)


def _resolve_file(ref: str) -> ResolvedModel:
    """A `.keras` file outside the store, checked to be a Keras archive, with its sha256."""
    if locations.is_uri(ref):
        raise InvalidReference(f"{ref}: register remote model files in a store and use --store")
    path = Path(ref).expanduser().absolute()
    if not path.is_file():
        raise StoreError(f"model file not found: {path}")
    read_config(path, str(path))
    return ResolvedModel(None, path, str(path), {"model_sha256": sha256_file(path)})
