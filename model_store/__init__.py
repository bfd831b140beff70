"""Versioned model store: immutable versions, atomic alias promotion, rollback and history.

Import-cheap on purpose: nothing here imports Keras, TensorFlow or Beam until it is needed.
"""

from model_store.errors import (
    AliasNotFound,
    CorruptVersion,
    InvalidModel,
    InvalidReference,
    PromotionConflict,
    StoreError,
    VersionNotFound,
)
from model_store.metadata import build_metadata, default_actor
from model_store.records import (
    CorruptEntry,
    HistoryEntry,
    HistoryLog,
    ModelVersion,
    ResolvedModel,
    VersionListing,
)
from model_store.store import ANY, ModelStore

__all__ = [
    "ANY",
    "AliasNotFound",
    "CorruptEntry",
    "CorruptVersion",
    "HistoryEntry",
    "HistoryLog",
    "InvalidModel",
    "InvalidReference",
    "ModelStore",
    "ModelVersion",
    "PromotionConflict",
    "ResolvedModel",
    "StoreError",
    "VersionListing",
    "VersionNotFound",
    "build_metadata",
    "default_actor",
]
