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
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from model_store.errors import StoreError

if TYPE_CHECKING:
    from digitflow.evaluate import Evaluation, PredictionProfile

SCHEMA_VERSION = 2
"""The card's shape as `to_dict` writes it. 1: every version written before the card existed."""
LEGACY_SCHEMA = 1
DIGITS = range(10)
_SHOWN = 60  # characters of a bad value quoted in an error
_T = TypeVar("_T")


class InvalidCard(StoreError):
    """A model card value that is not what its field holds; the message names the field."""


# --- checks: each returns the value as the card keeps it, or raises InvalidCard -------------


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _plain_number(value: Any) -> int | float | None:
    """`value` as a plain int or float (numpy scalars converted); None if it is not a number.

    A bool is not a number here, though Python counts it as one.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if isinstance(value, int | float):
        return value
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _fraction(value: Any, name: str) -> float:
    number = _plain_number(value)
    if number is None or not 0.0 <= number <= 1.0:  # NaN fails the range too
        raise InvalidCard(f"{name} must be a number in [0, 1], got {_shown(value)}")
    return number


def _loss(value: Any, name: str) -> float:
    number = _plain_number(value)
    if number is None or not math.isfinite(number) or number < 0:
        raise InvalidCard(f"{name} must be a finite number >= 0, got {_shown(value)}")
    return number


def _count(value: Any, name: str) -> int:
    number = _plain_number(value)
    if not isinstance(number, int) or number < 0:
        raise InvalidCard(f"{name} must be a whole number >= 0, got {_shown(value)}")
    return number


def _number(value: Any, name: str) -> float:
    number = _plain_number(value)
    if number is None or not math.isfinite(number):
        raise InvalidCard(f"{name} must be a finite number, got {_shown(value)}")
    return number


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidCard(f"{name} must be a string, got {_shown(value)}")
    return value


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidCard(f"{name} must be true or false, got {_shown(value)}")
    return value


def _version(value: Any, name: str) -> int:
    number = _plain_number(value)
    if not isinstance(number, int) or number < 1:
        raise InvalidCard(f"{name} must be a version number >= 1, got {_shown(value)}")
    return number


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise InvalidCard(f"{name} must be a JSON object with string keys, got {_shown(value)}")
    return dict(value)


def _digit(key: Any, name: str) -> int:
    """A per-digit key: 0-9, or the string JSON makes of it ("0"-"9")."""
    number = _plain_number(key)
    if isinstance(number, int) and number in DIGITS:
        return number
    if isinstance(key, str) and len(key) == 1 and key.isdigit():
        return int(key)
    raise InvalidCard(f"{name} must be keyed by digit 0-9, got key {_shown(key)}")


def _per_digit(value: Any, name: str, check: Any) -> dict[int, Any]:
    """A map of digit (0-9) to a value `check` accepts, keyed by int."""
    if not isinstance(value, Mapping):
        raise InvalidCard(f"{name} must be an object keyed by digit 0-9, got {_shown(value)}")
    result: dict[int, Any] = {}
    for key, item in value.items():
        digit = _digit(key, name)
        if digit in result:
            raise InvalidCard(f"{name} has digit {digit} twice")
        result[digit] = check(item, f"{name}[{digit}]")
    return dict(sorted(result.items()))


def _per_name(value: Any, name: str, check: Any) -> dict[str, Any]:
    """A map of name to a value `check` accepts."""
    return {key: check(item, f"{name}[{key}]") for key, item in _object(value, name).items()}


def _optional(value: Any, name: str, check: Any) -> Any:
    return None if value is None else check(value, name)


def _set(record: Any, name: str, value: Any) -> None:
    object.__setattr__(record, name, value)


def _check_extra(record: Any) -> None:
    known = {item.name for item in fields(record)} - {"extra"}
    extra = _object(record.extra, "extra")
    if clash := sorted(known & extra.keys()):
        raise InvalidCard(f"extra repeats a field: {', '.join(clash)}")
    _set(record, "extra", extra)


def _record(cls: type[_T], value: Any, name: str) -> _T:
    """`cls` from a JSON object: its known keys as fields, the rest as `extra`.

    InvalidCard messages from inside get `name.` in front.
    """
    if isinstance(value, cls):
        return value
    data = _object(value, name)
    for alias, target in getattr(cls, "ALIASES", {}).items():
        if alias in data and target not in data:
            data[target] = data.pop(alias)
    attrs = [item for item in fields(cls) if item.name != "extra"]  # type: ignore[arg-type]
    required = [item.name for item in attrs if item.default is item.default_factory is MISSING]
    if missing := [key for key in required if key not in data]:
        raise InvalidCard(f"{name} has no {', '.join(missing)}")
    known = {item.name: data.pop(item.name) for item in attrs if item.name in data}
    try:
        return cls(**known, extra=data)
    except InvalidCard as exc:
        raise InvalidCard(f"{name}.{exc}") from None


def _nested(record: Any, attr: str, cls: type) -> None:
    """Field `attr` of `record` as a `cls` (built from a dict if need be), or None."""
    value = getattr(record, attr)
    if value is not None and not isinstance(value, cls):
        _set(record, attr, _record(cls, value, attr))


def _dict_of(record: Any, omit_none: bool = True) -> dict[str, Any]:
    """JSON form of a record: `extra` first, then each field (records and maps converted)."""
    result = dict(record.extra)
    for item in fields(record):
        if item.name == "extra":
            continue
        value = getattr(record, item.name)
        if value is None and omit_none:
            continue
        result[item.name] = _plain(value)
    return result


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


# --- the parts of a card ---------------------------------------------------------------------


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
        _check_extra(self)
        _set(self, "accuracy", _optional(self.accuracy, "accuracy", _fraction))
        _set(self, "loss", _optional(self.loss, "loss", _loss))
        _set(self, "count", _optional(self.count, "count", _count))
        for name in ("precision", "recall"):
            value = getattr(self, name)
            _set(self, name, _optional(value, name, lambda v, n: _per_digit(v, n, _fraction)))
        _set(
            self,
            "support",
            _optional(self.support, "support", lambda v, n: _per_digit(v, n, _count)),
        )
        if isinstance(self.extra.get("per_digit"), Mapping):
            _per_digit(self.extra["per_digit"], "per_digit", _fraction)

    @classmethod
    def from_dict(cls, data: Any) -> Metrics:
        """Metrics from JSON, in any shape this project wrote; InvalidCard names a bad value."""
        data = _object(data, "metrics")
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
                f"keyed by digit 0-9, got {_shown(per_digit)}"
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
        return _dict_of(self)

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
        entry = _object(item, where)
        if "digit" not in entry:
            raise InvalidCard(f"{where} has no digit")
        digit = _digit(entry["digit"], f"{where}.digit")
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
        _check_extra(self)
        _set(self, "accuracy", _optional(self.accuracy, "accuracy", _fraction))
        _set(self, "count", _optional(self.count, "count", _count))

    @classmethod
    def from_evaluation(cls, evaluation: Evaluation) -> Score:
        return cls(accuracy=evaluation.accuracy, count=evaluation.count)

    def to_dict(self) -> dict[str, Any]:
        return _dict_of(self)


@dataclass(frozen=True)
class HoldoutScores:
    """The candidate and the model it was compared with, on the spans' pooled holdout."""

    candidate: Score | None = None
    production: Score | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_extra(self)
        _nested(self, "candidate", Score)
        _nested(self, "production", Score)

    def to_dict(self) -> dict[str, Any]:
        return _dict_of(self, omit_none=False)  # schema 1 wrote `"candidate": null`


@dataclass(frozen=True)
class SpanUse:
    """The labelled spans a model learned from: names, their checksum and image counts."""

    names: tuple[str, ...] = ()
    checksum: str | None = None
    train_images: int | None = None
    holdout_images: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_extra(self)
        if not isinstance(self.names, list | tuple):
            raise InvalidCard(f"names must be a list of span names, got {_shown(self.names)}")
        _set(self, "names", tuple(_text(n, f"names[{i}]") for i, n in enumerate(self.names)))
        _set(self, "checksum", _optional(self.checksum, "checksum", _text))
        _set(self, "train_images", _optional(self.train_images, "train_images", _count))
        _set(self, "holdout_images", _optional(self.holdout_images, "holdout_images", _count))

    def to_dict(self) -> dict[str, Any]:
        return _dict_of(self, omit_none=False)


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
        _check_extra(self)
        share = self.digit_share
        if not isinstance(share, list | tuple) or len(share) != len(DIGITS):
            raise InvalidCard(f"digit_share must be 10 numbers in [0, 1], got {_shown(share)}")
        _set(
            self,
            "digit_share",
            tuple(_fraction(s, f"digit_share[{i}]") for i, s in enumerate(share)),
        )
        _set(self, "mean_confidence", _fraction(self.mean_confidence, "mean_confidence"))
        _set(
            self, "low_confidence_rate", _fraction(self.low_confidence_rate, "low_confidence_rate")
        )
        _set(self, "count", _count(self.count, "count"))
        _set(self, "threshold", _optional(self.threshold, "threshold", _fraction))

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
        return _dict_of(self)


@dataclass(frozen=True)
class GateCheck:
    """One promotion rule's outcome."""

    name: str
    passed: bool
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_extra(self)
        _text(self.name, "name")
        _flag(self.passed, "passed")
        _text(self.detail, "detail")

    def to_dict(self) -> dict[str, Any]:
        return _dict_of(self)


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
        _check_extra(self)
        _set(self, "promote", _optional(self.promote, "promote", _flag))
        _set(self, "reason", _optional(self.reason, "reason", _text))
        if not isinstance(self.checks, list | tuple):
            raise InvalidCard(f"checks must be a list, got {_shown(self.checks)}")
        _set(
            self,
            "checks",
            tuple(_record(GateCheck, c, f"checks[{i}]") for i, c in enumerate(self.checks)),
        )
        _set(self, "thresholds", _per_name(self.thresholds, "thresholds", _number))
        _set(self, "compared_with", _optional(self.compared_with, "compared_with", _version))

    @classmethod
    def from_decision(
        cls, decision: Any, thresholds: Mapping[str, float], compared_with: int | None
    ) -> GateVerdict:
        """From a gate decision (anything with a `to_dict()` of promote, reason and checks)."""
        return _record(
            cls,
            {**decision.to_dict(), "thresholds": dict(thresholds), "compared_with": compared_with},
            "gate",
        )

    def to_dict(self) -> dict[str, Any]:
        result = _dict_of(self, omit_none=False)
        for name in ("promote", "reason"):
            if result[name] is None:
                del result[name]
        return result


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
        _check_extra(self)
        _set(self, "accuracy", _optional(self.accuracy, "accuracy", _fraction))
        _set(
            self,
            "per_style",
            _optional(self.per_style, "per_style", lambda v, n: _per_name(v, n, _fraction)),
        )
        _set(self, "count", _optional(self.count, "count", _count))
        _set(self, "suite", _optional(self.suite, "suite", _text))

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
        return _dict_of(self)


# --- the card --------------------------------------------------------------------------------

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
        _check_extra(self)
        if not isinstance(self.metrics, Metrics):
            metrics = _object(self.metrics, "metrics")
            try:
                _set(self, "metrics", Metrics.from_dict(metrics))
            except InvalidCard as exc:
                raise InvalidCard(f"metrics.{exc}") from None
        _set(self, "params", _object(self.params, "params"))
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
            _set(self, name, _optional(getattr(self, name), name, _text))
        for name, cls in _NESTED.items():
            _nested(self, name, cls)
        _set(
            self,
            "library_versions",
            _optional(
                self.library_versions,
                "library_versions",
                lambda v, n: _per_name(v, n, lambda x, m: _optional(x, m, _text)),
            ),
        )
        _set(self, "version", _optional(self.version, "version", _version))
        _set(self, "schema_version", _version(self.schema_version, "schema_version"))

    @classmethod
    def from_dict(cls, data: Any) -> ModelCard:
        """The card of a `metadata.json` in any shape this project wrote (no `schema_version`:
        schema 1); unknown keys go to `extra`. InvalidCard, naming the field, if a value is bad.
        """
        if not isinstance(data, Mapping):
            raise InvalidCard(f"metadata must be a JSON object, got {_shown(data)}")
        data = _object(data, "metadata")
        known = [item.name for item in fields(cls) if item.name != "extra"]
        values = {name: data.pop(name) for name in known if name in data}
        values.setdefault("schema_version", LEGACY_SCHEMA)
        return cls(**values, extra=data)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (`metadata.json`): unset optional parts left out, `extra` kept."""
        result = _dict_of(self, omit_none=False)
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
