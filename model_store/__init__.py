"""Versioned model store: immutable versions, atomic alias promotion, rollback and history;
labelled spans of people's own scans for training (`SpanStore`).

Import-cheap on purpose: nothing here imports Keras, TensorFlow or Beam until it is needed, and
the span API (numpy, Pillow) is imported on first use of one of its names.
"""

from typing import Any

from model_store.aliases import ANY
from model_store.card import (
    SCHEMA_VERSION,
    GateCheck,
    GateVerdict,
    HoldoutScores,
    InvalidCard,
    Metrics,
    ModelCard,
    Reference,
    Robustness,
    Score,
    SpanUse,
)
from model_store.errors import (
    AliasNotFound,
    CorruptVersion,
    InvalidModel,
    InvalidReference,
    PromotionConflict,
    StoreError,
    VersionNotFound,
)
from model_store.metadata import build_card, build_metadata, default_actor
from model_store.records import (
    CorruptEntry,
    HistoryEntry,
    HistoryLog,
    ModelVersion,
    ResolvedModel,
    VersionListing,
)
from model_store.store import ModelStore

_SPAN_NAMES = {  # the span API, imported on first use: name -> its module in model_store.spans
    "AddResult": "records",
    "LabelledImages": "records",
    "Span": "records",
    "SpanStore": "store",
    "split_of": "arrays",
}

__all__ = [
    "ANY",
    "SCHEMA_VERSION",
    "AddResult",
    "AliasNotFound",
    "CorruptEntry",
    "CorruptVersion",
    "GateCheck",
    "GateVerdict",
    "HistoryEntry",
    "HistoryLog",
    "HoldoutScores",
    "InvalidCard",
    "InvalidModel",
    "InvalidReference",
    "LabelledImages",
    "Metrics",
    "ModelCard",
    "ModelStore",
    "ModelVersion",
    "PromotionConflict",
    "Reference",
    "ResolvedModel",
    "Robustness",
    "Score",
    "Span",
    "SpanStore",
    "SpanUse",
    "StoreError",
    "VersionListing",
    "VersionNotFound",
    "build_card",
    "build_metadata",
    "default_actor",
    "split_of",
]


def __getattr__(name: str) -> Any:
    """The span API's names, imported on first use (PEP 562)."""
    if name in _SPAN_NAMES:
        from model_store.spans import arrays, records, store

        modules = {"arrays": arrays, "records": records, "store": store}
        return getattr(modules[_SPAN_NAMES[name]], name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
