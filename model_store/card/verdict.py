"""What the promotion gate decided for a version: each rule's outcome and the verdict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from model_store.card import checks
from model_store.card.checks import InvalidCard


@dataclass(frozen=True)
class GateCheck:
    """One promotion rule's outcome."""

    name: str
    passed: bool
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks.check_extra(self)
        checks.text(self.name, "name")
        checks.flag(self.passed, "passed")
        checks.text(self.detail, "detail")

    def to_dict(self) -> dict[str, Any]:
        return checks.dict_of(self)


@dataclass(frozen=True)
class GateVerdict:
    """What the promotion gate decided for this version, under which thresholds, against which
    version (`compared_with`; None: there was none)."""

    promote: bool | None = None
    reason: str | None = None
    checks: tuple[GateCheck, ...] = ()
    thresholds: dict[str, float] = field(default_factory=dict)
    compared_with: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks.check_extra(self)
        checks.assign(self, "promote", checks.optional(self.promote, "promote", checks.flag))
        checks.assign(self, "reason", checks.optional(self.reason, "reason", checks.text))
        if not isinstance(self.checks, list | tuple):
            raise InvalidCard(f"checks must be a list, got {checks.shown(self.checks)}")
        checks.assign(
            self,
            "checks",
            tuple(checks.record(GateCheck, c, f"checks[{i}]") for i, c in enumerate(self.checks)),
        )
        checks.assign(
            self, "thresholds", checks.per_name(self.thresholds, "thresholds", checks.number)
        )
        checks.assign(
            self,
            "compared_with",
            checks.optional(self.compared_with, "compared_with", checks.version),
        )

    @classmethod
    def from_decision(
        cls, decision: Any, thresholds: Mapping[str, float], compared_with: int | None
    ) -> GateVerdict:
        """From a gate decision (anything with a `to_dict()` of promote, reason and checks)."""
        return checks.record(
            cls,
            {**decision.to_dict(), "thresholds": dict(thresholds), "compared_with": compared_with},
            "gate",
        )

    def to_dict(self) -> dict[str, Any]:
        result = checks.dict_of(self, omit_none=False)
        for name in ("promote", "reason"):
            if result[name] is None:
                del result[name]
        return result
