"""Versions: `versions/<n>/`, each a model file and its metadata.json (the model card), which
is written last, so a version without it does not exist yet.

    versions/<n>/model.keras     the model, copied in at registration, never changed
    versions/<n>/metadata.json   the card; `annotate` adds top-level keys later

Registering claims the next free number and numbering skips every directory, complete or not,
so a number is never reused. Reading checks the metadata and the model file's sha256.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from digitflow import locations
from digitflow.locations import ChecksumMismatch
from model_store.card import SCHEMA_VERSION, InvalidCard, ModelCard
from model_store.conditional_writes import encode, retried
from model_store.errors import CorruptVersion, StoreError, VersionNotFound
from model_store.keras_file import describe, read_config
from model_store.metadata import code_version, complete, library_versions, now_iso
from model_store.records import ModelVersion
from model_store.refs import is_version, label
from model_store.storage import Storage
from model_store.validation import validate

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
_VERSION_DIR = re.compile(r"[1-9][0-9]*")
FIXED_METADATA = frozenset({"version", "model_sha256", "created_at", "schema_version"})
"""Metadata keys set at registration that `annotate` never changes."""


class Versions:
    """A store's versions on its `Storage`: registered, annotated, read and verified."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def register(self, source: Path, metadata: ModelCard | Mapping[str, Any]) -> int:
        """Copy a `.keras` file in as the next version, validated; its number."""
        if not source.exists():
            raise StoreError(f"model file not found: {source}")
        if source.is_dir():
            raise StoreError(f"{source} is a directory; register a zipped .keras file")
        card = _new_card(metadata)
        with self._storage.staging() as staged:
            sha256 = locations.copy_file(source, staged / MODEL_FILE)
            # Check the copy, not the source: it is what readers will get.
            model_config = read_config(staged / MODEL_FILE, str(source))
            validate(staged / MODEL_FILE, str(source))
            architecture = card.architecture or describe(model_config)
            card = replace(card, model_sha256=sha256, architecture=architecture)
            record = card.to_dict()
            numbers = itertools.count(max(self.numbers(), default=0) + 1)
            return retried(
                self._storage, "versions/", lambda: self._publish(staged, record, next(numbers))
            )

    def annotate(self, number: int, updates: dict[str, Any]) -> None:
        """Merge `updates` (checked by `check_annotations`) into version `number`'s metadata,
        in one conditional rewrite repeated on a concurrent change, so no update is lost."""
        name = f"versions/{number}/{METADATA_FILE}"

        def merge() -> None:
            metadata, token = self.read_metadata(number)
            if metadata is None:
                raise VersionNotFound(
                    f"version {label(number)} does not exist in {self._storage.root}"
                )
            record = {**metadata, **updates}
            _card_of(record)
            self._storage.write_if(name, encode(record), token, history=None)

        retried(self._storage, name, merge)

    def numbers(self) -> list[int]:
        """Numbers of all version directories, complete or not."""
        names = self._storage.children("versions")
        return [int(name) for name in names if _VERSION_DIR.fullmatch(name)]

    def metadata(self, number: int) -> dict[str, Any] | None:
        """A version's metadata; None if it is not (yet) complete; CorruptVersion if bad."""
        return self.read_metadata(number)[0]

    def read_metadata(self, number: int) -> tuple[dict[str, Any] | None, str | None]:
        """`metadata` and the token to rewrite it conditionally."""
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

    def version(
        self, number: int, metadata: dict[str, Any], aliases: tuple[str, ...]
    ) -> ModelVersion:
        """The record of version `number`, read as `metadata`, with the `aliases` to it."""
        return ModelVersion(
            version=number,
            created_at=metadata["created_at"],
            metrics={"accuracy": None, **metadata["metrics"]},
            aliases=aliases,
            metadata=metadata,
            model_uri=self._storage.uri(f"versions/{number}/{MODEL_FILE}"),
        )

    def model_file(self, version: ModelVersion) -> Path:
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

    def _publish(self, staged: Path, record: dict[str, Any], version: int) -> int:
        """Publish the staged version as `version`; WriteConflict if that number is taken."""
        record["version"] = version
        locations.write(staged / METADATA_FILE, encode(record))
        self._storage.publish(staged, f"versions/{version}", marker=METADATA_FILE)
        return version


def check_annotations(updates: dict[str, Any]) -> None:
    """StoreError unless `updates` is a dict of string keys, none of them FIXED_METADATA."""
    if not isinstance(updates, dict) or not all(isinstance(key, str) for key in updates):
        raise StoreError("annotations must be a dict with string keys")
    if fixed := sorted(FIXED_METADATA & updates.keys()):
        raise StoreError(f"cannot annotate {', '.join(fixed)}: set once at registration")


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
    encode(card.to_dict())
    return card


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
