"""What a model scored: on MNIST's test set (`Metrics`), on the spans' holdout (`Score`,
`HoldoutScores`), on the real-scan robustness suite (`Robustness`), and the prediction profile
drift compares bulk runs with (`Reference`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from model_store.card import checks
from model_store.card.checks import DIGITS, InvalidCard

if TYPE_CHECKING:
    from digitflow.evaluate import Evaluation, PredictionProfile


@dataclass(frozen=True)
class Metrics:
    """The model on MNIST's test set (or whatever a person measured it on).

    `count` is read from `count` or, as schema 1 wrote it, `test_images`. A `per_digit` list
    (`digitflow evaluate --json`) fills `precision`, `recall` and `support` when none of them is
    given. Other keys (`confusion`, `profile`, anything) stay in `extra`; a `per_digit` object
    of digit -> number stays there too, checked as fractions.
    """

    accuracy: float | None = None
    loss: float | None = None
    count: int | None = None
    precision: dict[int, float] | None = None
    recall: dict[int, float] | None = None
    support: dict[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks.check_extra(self)
        checks.assign(self, "accuracy", checks.optional(self.accuracy, "accuracy", checks.fraction))
        checks.assign(self, "loss", checks.optional(self.loss, "loss", checks.loss))
        checks.assign(self, "count", checks.optional(self.count, "count", checks.count))
        for name in ("precision", "recall"):
            value = getattr(self, name)
            checks.assign(
                self,
                name,
                checks.optional(value, name, lambda v, n: checks.per_digit(v, n, checks.fraction)),
            )
        checks.assign(
            self,
            "support",
            checks.optional(
                self.support, "support", lambda v, n: checks.per_digit(v, n, checks.count)
            ),
        )
        if isinstance(self.extra.get("per_digit"), Mapping):
            checks.per_digit(self.extra["per_digit"], "per_digit", checks.fraction)

    @classmethod
    def from_dict(cls, data: Any) -> Metrics:
        """Metrics from JSON, in any shape this project wrote; InvalidCard names a bad value."""
        data = checks.json_object(data, "metrics")
        if "count" not in data and "test_images" in data:
            data["count"] = data.pop("test_images")
        per_digit = data.get("per_digit")
        if isinstance(per_digit, list):
            maps = _from_per_digit(per_digit)
            if {"precision", "recall", "support"} & data.keys():
                cls(**maps)  # checked, kept as given: the explicit maps win
            else:
                data.pop("per_digit")
                data.update(maps)
        elif per_digit is not None and not isinstance(per_digit, Mapping):
            raise InvalidCard(
                "per_digit must be a list of {digit, precision, recall, support} or an object "
                f"keyed by digit 0-9, got {checks.shown(per_digit)}"
            )
        known = {name: data.pop(name) for name in _METRIC_FIELDS if name in data}
        return cls(**known, extra=data)

    @classmethod
    def from_evaluation(cls, evaluation: Evaluation) -> Metrics:
        """A `digitflow.evaluate.Evaluation`'s accuracy, loss, count and per-digit figures."""
        return cls(
            accuracy=evaluation.accuracy,
            loss=evaluation.loss,
            count=evaluation.count,
            precision={m.digit: m.precision for m in evaluation.per_digit},
            recall={m.digit: m.recall for m in evaluation.per_digit},
            support={m.digit: m.support for m in evaluation.per_digit},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the fields that are set (digit keys as strings) and `extra`."""
        return checks.dict_of(self)

    def lowest_recall(self) -> tuple[int, float] | None:
        """The digit with the lowest recall and that recall; None when no recall is recorded.

        Digits with a support of 0 (no test images) are left out when supports are known.
        """
        recall = self.recall or {}
        measured = {d: r for d, r in recall.items() if self.support is None or self.support.get(d)}
        if not measured:
            return None
        digit = min(measured, key=lambda d: (measured[d], d))
        return digit, measured[digit]


_METRIC_FIELDS = ("accuracy", "loss", "count", "precision", "recall", "support")


def _from_per_digit(items: list[Any]) -> dict[str, dict[int, Any]]:
    """`evaluate --json`'s per_digit list as precision, recall and support maps."""
    maps: dict[str, dict[int, Any]] = {"precision": {}, "recall": {}, "support": {}}
    for index, item in enumerate(items):
        where = f"per_digit[{index}]"
        entry = checks.json_object(item, where)
        if "digit" not in entry:
            raise InvalidCard(f"{where} has no digit")
        digit = checks.digit(entry["digit"], f"{where}.digit")
        for name in maps:
            if name in entry:
                maps[name][digit] = entry[name]
    return {name: values for name, values in maps.items() if values}


@dataclass(frozen=True)
class Score:
    """Accuracy on `count` images (e.g. the own-scans holdout)."""

    accuracy: float | None = None
    count: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks.check_extra(self)
        checks.assign(self, "accuracy", checks.optional(self.accuracy, "accuracy", checks.fraction))
        checks.assign(self, "count", checks.optional(self.count, "count", checks.count))

    @classmethod
    def from_evaluation(cls, evaluation: Evaluation) -> Score:
        return cls(accuracy=evaluation.accuracy, count=evaluation.count)

    def to_dict(self) -> dict[str, Any]:
        return checks.dict_of(self)


@dataclass(frozen=True)
class HoldoutScores:
    """The candidate and the model it was compared with, on the spans' pooled holdout."""

    candidate: Score | None = None
    production: Score | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks.check_extra(self)
        checks.nested(self, "candidate", Score)
        checks.nested(self, "production", Score)

    def to_dict(self) -> dict[str, Any]:
        return checks.dict_of(self, omit_none=False)  # schema 1 wrote `"candidate": null`


@dataclass(frozen=True)
class Reference:
    """The model's prediction profile on the test set: what drift compares bulk runs with.

    The fields of `digitflow.evaluate.PredictionProfile`, kept here so reading a card needs no
    numpy; `profile()` gives the PredictionProfile.
    """

    digit_share: tuple[float, ...]
    mean_confidence: float
    low_confidence_rate: float
    count: int
    threshold: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks.check_extra(self)
        share = self.digit_share
        if not isinstance(share, list | tuple) or len(share) != len(DIGITS):
            raise InvalidCard(
                f"digit_share must be 10 numbers in [0, 1], got {checks.shown(share)}"
            )
        checks.assign(
            self,
            "digit_share",
            tuple(checks.fraction(s, f"digit_share[{i}]") for i, s in enumerate(share)),
        )
        checks.assign(
            self, "mean_confidence", checks.fraction(self.mean_confidence, "mean_confidence")
        )
        checks.assign(
            self,
            "low_confidence_rate",
            checks.fraction(self.low_confidence_rate, "low_confidence_rate"),
        )
        checks.assign(self, "count", checks.count(self.count, "count"))
        checks.assign(
            self, "threshold", checks.optional(self.threshold, "threshold", checks.fraction)
        )

    @classmethod
    def from_profile(cls, profile: PredictionProfile) -> Reference:
        return cls(**profile.to_dict())

    def profile(self) -> PredictionProfile:
        """As `digitflow.evaluate.PredictionProfile` (imports numpy)."""
        from digitflow.evaluate import PredictionProfile

        given = {"threshold": self.threshold} if self.threshold is not None else {}
        return PredictionProfile(
            digit_share=list(self.digit_share),
            mean_confidence=self.mean_confidence,
            low_confidence_rate=self.low_confidence_rate,
            count=self.count,
            **given,
        )

    def to_dict(self) -> dict[str, Any]:
        return checks.dict_of(self)


@dataclass(frozen=True)
class Robustness:
    """The model on the real-scan robustness suite: its accuracy overall and per style, on
    `count` images of the suite `suite` (its checksum). The fields of
    `digitflow.robustness.RobustnessScore`; `overall` is read as `accuracy` too."""

    ALIASES: ClassVar[dict[str, str]] = {"overall": "accuracy"}

    accuracy: float | None = None
    per_style: dict[str, float] | None = None
    count: int | None = None
    suite: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks.check_extra(self)
        checks.assign(self, "accuracy", checks.optional(self.accuracy, "accuracy", checks.fraction))
        checks.assign(
            self,
            "per_style",
            checks.optional(
                self.per_style, "per_style", lambda v, n: checks.per_name(v, n, checks.fraction)
            ),
        )
        checks.assign(self, "count", checks.optional(self.count, "count", checks.count))
        checks.assign(self, "suite", checks.optional(self.suite, "suite", checks.text))

    @classmethod
    def from_score(cls, score: Any) -> Robustness:
        """From a `digitflow.robustness.RobustnessScore` (accuracy, per_style, count, suite)."""
        return cls(
            accuracy=score.accuracy,
            per_style=dict(score.per_style),
            count=score.count,
            suite=score.suite,
        )

    @property
    def overall(self) -> float | None:
        return self.accuracy

    def to_dict(self) -> dict[str, Any]:
        return checks.dict_of(self)
