"""The model card: what a version records about itself, as one typed, validated record.

`ModelCard` is the version's `metadata.json`: written once at registration (by the nightly flow
or `digitflow models register`), read back by the report, the history table, drift and identity
code through typed fields instead of `metadata.get(...) or {}` chains.

- Every record is a frozen dataclass checked when it is built: fractions (accuracy, precision,
  recall, holdout and robustness scores) are numbers in [0, 1], losses finite and >= 0, counts
  whole numbers >= 0, per-digit maps keyed by digit 0-9. A bad value raises `InvalidCard` (a
  `StoreError`) whose one-line message names the field: `metrics.accuracy must be a number in
  [0, 1], got 7`. A card cannot hold a bad value, however it was made.
- `from_dict` reads every shape this project has written (schema 1: no `schema_version` key,
  metrics' count as `test_images`, `digitflow evaluate --json`'s `per_digit` list) and keeps the
  keys it does not know in `extra`, at each level, so `to_dict` loses nothing. A new card is
  schema 2 (`SCHEMA_VERSION`); the store writes every new version in that shape and never
  rewrites an old one. `from_dict(card.to_dict()) == card` for every card.
- Nothing here imports numpy, Keras or TensorFlow: `models list` reads cards and stays cheap.

The parts: `checks` (every field's check, in one place), `scores` (what the model scored),
`verdict` (what the gate decided), `model_card` (the card and the spans it learned from).
"""

from model_store.card.checks import DIGITS, InvalidCard
from model_store.card.model_card import LEGACY_SCHEMA, SCHEMA_VERSION, ModelCard, SpanUse
from model_store.card.scores import HoldoutScores, Metrics, Reference, Robustness, Score
from model_store.card.verdict import GateCheck, GateVerdict

__all__ = [
    "DIGITS",
    "LEGACY_SCHEMA",
    "SCHEMA_VERSION",
    "GateCheck",
    "GateVerdict",
    "HoldoutScores",
    "InvalidCard",
    "Metrics",
    "ModelCard",
    "Reference",
    "Robustness",
    "Score",
    "SpanUse",
]
