"""Versioned model store: immutable versions, atomic alias promotion, rollback and history.

Import-cheap on purpose: nothing here imports Keras, TensorFlow or Beam until it is needed.
"""

from model_store.errors import (
    AliasNotFound,
    CorruptVersion,
    InvalidReference,
    PromotionConflict,
    StoreError,
    VersionNotFound,
)
from model_store.metadata import build_metadata, default_actor
from model_store.records import HistoryEntry, ModelVersion, ResolvedModel
from model_store.store import ANY, ModelStore

__all__ = [
    "ANY",
    "AliasNotFound",
    "CorruptVersion",
    "HistoryEntry",
    "InvalidReference",
    "ModelStore",
    "ModelVersion",
    "PromotionConflict",
    "ResolvedModel",
    "StoreError",
    "VersionNotFound",
    "build_metadata",
    "default_actor",
]
