"""The card itself: `ModelCard`, a version's `metadata.json`, and what it learned from
(`SpanUse`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from model_store.card import checks
from model_store.card.checks import InvalidCard
from model_store.card.scores import HoldoutScores, Metrics, Reference, Robustness
from model_store.card.verdict import GateVerdict

if TYPE_CHECKING:
    from digitflow.evaluate import PredictionProfile

SCHEMA_VERSION = 2
"""The card's shape as `to_dict` writes it. 1: every version written before the card existed."""
LEGACY_SCHEMA = 1


@dataclass(frozen=True)
class SpanUse:
    """The labelled spans a model learned from: names, their checksum and image counts."""

    names: tuple[str, ...] = ()
    checksum: str | None = None
    train_images: int | None = None
    holdout_images: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks.check_extra(self)
        if not isinstance(self.names, list | tuple):
            raise InvalidCard(f"names must be a list of span names, got {checks.shown(self.names)}")
        checks.assign(
            self, "names", tuple(checks.text(n, f"names[{i}]") for i, n in enumerate(self.names))
        )
        checks.assign(self, "checksum", checks.optional(self.checksum, "checksum", checks.text))
        checks.assign(
            self, "train_images", checks.optional(self.train_images, "train_images", checks.count)
        )
        checks.assign(
            self,
            "holdout_images",
            checks.optional(self.holdout_images, "holdout_images", checks.count),
        )

    def to_dict(self) -> dict[str, Any]:
        return checks.dict_of(self, omit_none=False)


_NESTED: dict[str, type] = {
    "spans": SpanUse,
    "holdout": HoldoutScores,
    "reference": Reference,
    "gate": GateVerdict,
    "robustness": Robustness,
}
_ALWAYS = frozenset(
    {
        "metrics",
        "params",
        "dataset_checksum",
        "flow_run_id",
        "created_at",
        "code_version",
        "library_versions",
    }
)
"""Keys every version has had since the first release (`metadata.complete`), null or not."""


@dataclass(frozen=True)
class ModelCard:
    """Everything a version records about itself. See the module docstring.

    `version`, `model_sha256` and `created_at` are set by the store at registration; the store
    also fills `architecture` (from the model file), `created_at`, `code_version` and
    `library_versions` when they are None.
    """

    metrics: Metrics = field(default_factory=Metrics)
    params: dict[str, Any] = field(default_factory=dict)
    architecture: str | None = None
    dataset_checksum: str | None = None
    flow_run_id: str | None = None
    identity: str | None = None
    spans: SpanUse | None = None
    holdout: HoldoutScores | None = None
    reference: Reference | None = None
    gate: GateVerdict | None = None
    robustness: Robustness | None = None
    promotion: str | None = None  # set after registration, e.g. `lost the promotion race to v8`
    registered_by: str | None = None  # `digitflow models register`'s actor
    reason: str | None = None  # `digitflow models register --reason`
    created_at: str | None = None
    code_version: str | None = None
    library_versions: dict[str, str | None] | None = None
    version: int | None = None
    model_sha256: str | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks.check_extra(self)
        if not isinstance(self.metrics, Metrics):
            metrics = checks.json_object(self.metrics, "metrics")
            try:
                checks.assign(self, "metrics", Metrics.from_dict(metrics))
            except InvalidCard as exc:
                raise InvalidCard(f"metrics.{exc}") from None
        checks.assign(self, "params", checks.json_object(self.params, "params"))
        for name in (
            "architecture",
            "dataset_checksum",
            "flow_run_id",
            "identity",
            "promotion",
            "registered_by",
            "reason",
            "created_at",
            "code_version",
            "model_sha256",
        ):
            checks.assign(self, name, checks.optional(getattr(self, name), name, checks.text))
        for name, cls in _NESTED.items():
            checks.nested(self, name, cls)
        checks.assign(
            self,
            "library_versions",
            checks.optional(
                self.library_versions,
                "library_versions",
                lambda v, n: checks.per_name(v, n, lambda x, m: checks.optional(x, m, checks.text)),
            ),
        )
        checks.assign(self, "version", checks.optional(self.version, "version", checks.version))
        checks.assign(self, "schema_version", checks.version(self.schema_version, "schema_version"))

    @classmethod
    def from_dict(cls, data: Any) -> ModelCard:
        """The card of a `metadata.json` in any shape this project wrote (no `schema_version`:
        schema 1); unknown keys go to `extra`. InvalidCard, naming the field, if a value is bad.
        """
        if not isinstance(data, Mapping):
            raise InvalidCard(f"metadata must be a JSON object, got {checks.shown(data)}")
        data = checks.json_object(data, "metadata")
        known = [item.name for item in fields(cls) if item.name != "extra"]
        values = {name: data.pop(name) for name in known if name in data}
        values.setdefault("schema_version", LEGACY_SCHEMA)
        return cls(**values, extra=data)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (`metadata.json`): unset optional parts left out, `extra` kept."""
        result = checks.dict_of(self, omit_none=False)
        for item in fields(self):
            if item.name in result and result[item.name] is None and item.name not in _ALWAYS:
                del result[item.name]
        return result

    # --- what the readers ask --------------------------------------------------------------

    @property
    def span_names(self) -> tuple[str, ...]:
        """The spans whose train images the model learned from (none: MNIST only)."""
        return () if self.spans is None else self.spans.names

    @property
    def holdout_accuracy(self) -> float | None:
        """The model's own accuracy on the spans' pooled holdout when it was registered."""
        if self.holdout is None or self.holdout.candidate is None:
            return None
        return self.holdout.candidate.accuracy

    @property
    def outcome(self) -> str:
        """The version's promotion outcome as recorded: `promotion` when set after the run,
        else the gate's `promoted` / `not promoted`, else `registered by hand`."""
        if self.promotion is not None:
            return self.promotion
        if self.gate is None:
            return "registered by hand"
        return "promoted" if self.gate.promote else "not promoted"

    def reference_profile(self) -> PredictionProfile | None:
        """The reference prediction profile for drift, None when none was recorded."""
        return None if self.reference is None else self.reference.profile()
