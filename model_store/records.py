"""The values the store hands out: versions, resolved models and history entries."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from model_store.card import ModelCard


@dataclass(frozen=True)
class ModelVersion:
    """One immutable registered version and the aliases that currently point to it.

    `metadata` is the version's metadata.json as stored; `card` is the same, typed.
    """

    version: int
    created_at: str
    metrics: dict[str, Any]
    aliases: tuple[str, ...]
    metadata: dict[str, Any]
    model_uri: str

    @cached_property
    def card(self) -> ModelCard:
        """The version's model card (the store checked it when it read the metadata)."""
        return ModelCard.from_dict(self.metadata)

    def to_dict(self) -> dict[str, Any]:
        """JSON form used by `digitflow models ... --json`."""
        return {
            "version": self.version,
            "created_at": self.created_at,
            "aliases": list(self.aliases),
            "metrics": self.metrics,
            "model_uri": self.model_uri,
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class ResolvedModel:
    """A reference pinned to a verified local model file; `version` is None for a file outside.

    `metadata["model_sha256"]` (also `sha256`) is the file's content hash, for either kind.
    """

    version: int | None
    local_path: Path
    uri: str
    metadata: dict[str, Any]

    @cached_property
    def card(self) -> ModelCard:
        """The model card: a version's, or for a file outside just its `model_sha256`."""
        return ModelCard.from_dict(self.metadata)

    @property
    def sha256(self) -> str:
        """sha256 of the model file: what every later reader (a Beam worker) must find."""
        return self.metadata["model_sha256"]


@dataclass(frozen=True)
class HistoryEntry:
    """One alias change: `action` is `promote` or `rollback`."""

    alias: str
    from_version: int | None
    to_version: int
    reason: str
    actor: str
    at: str
    action: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as stored in the history log."""
        return {
            "alias": self.alias,
            "from": self.from_version,
            "to": self.to_version,
            "reason": self.reason,
            "actor": self.actor,
            "at": self.at,
            "action": self.action,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HistoryEntry:
        """Inverse of `to_dict`; KeyError or TypeError on a malformed entry."""
        return cls(
            alias=str(data["alias"]),
            from_version=None if data["from"] is None else int(data["from"]),
            to_version=int(data["to"]),
            reason=str(data["reason"]),
            actor=str(data["actor"]),
            at=str(data["at"]),
            action=str(data["action"]),
        )


@dataclass(frozen=True)
class CorruptEntry:
    """A version directory whose metadata cannot be read; `problem` says why, in one line."""

    version: int
    aliases: tuple[str, ...]
    problem: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form: listed beside the readable versions, told apart by `problem`."""
        return {"version": self.version, "aliases": list(self.aliases), "problem": self.problem}


@dataclass(frozen=True)
class VersionListing:
    """Every complete version of a store: the readable ones and the corrupt ones."""

    versions: list[ModelVersion]
    corrupt: list[CorruptEntry]


@dataclass(frozen=True)
class HistoryLog:
    """The readable history entries, and one line per entry that could not be read."""

    entries: list[HistoryEntry]
    problems: list[str]
