"""The promotion gate: should a candidate replace the production model? Pure, no Prefect.

Four rules, each recorded with a human-readable outcome:

- accuracy floor: MNIST test accuracy >= `min_accuracy` (the mission's 97%);
- no regression: at most `max_regression` below the production model, both evaluated on the
  same test images in the same run (skipped, and said so, when there is no production model or
  it cannot be loaded: the candidate is then judged on the floors alone);
- per-digit recall: every digit with test examples has recall >= `min_digit_recall`;
- own-scans holdout: on the labelled spans' pooled holdout, at most `holdout_tolerance` below
  production on the same images (skipped, and said so, with fewer than `min_holdout` images or
  no production model to compare with).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # keeps this module import-cheap for the CLI, which reads the defaults
    from digitflow.evaluate import Evaluation

# Accuracies are ratios of image counts; a difference that is exactly the threshold in images
# must not fail on float round-off (0.9900 - 0.9880 = 0.0020000000000000018).
_TOLERANCE = 1e-9
FLOORS = ("accuracy floor", "per-digit recall")  # the rules that need no production model


@dataclass(frozen=True)
class Thresholds:
    """The gate's parameters; the defaults are the nightly run's."""

    min_accuracy: float = 0.97
    max_regression: float = 0.002
    # The 97% floor applied to each digit, less 2 points: hard digits (8, 9, 5) sit a little
    # below the mean and, with ~1,000 test images per digit, recall has ~0.5 point of noise.
    min_digit_recall: float = 0.95
    # Own scans are few: below `min_holdout` images the comparison is skipped as noise. One image
    # is 1/n of accuracy, so the tolerance forgives a single extra mistake only from 100 images.
    min_holdout: int = 50
    holdout_tolerance: float = 0.01

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name != "min_holdout" and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.min_holdout < 0:
            raise ValueError(f"min_holdout must be 0 or more, got {self.min_holdout}")


@dataclass(frozen=True)
class Holdout:
    """Both models on the same own-scans holdout images; `production` None: none to compare."""

    candidate: Evaluation
    production: Evaluation | None = None


@dataclass(frozen=True)
class Check:
    """One rule's outcome: `detail` says what was compared, in words and numbers."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    """Promote or not, why in one line, and every rule's outcome."""

    promote: bool
    reason: str
    checks: list[Check] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _floor(candidate: Evaluation, minimum: float) -> Check:
    passed = candidate.accuracy >= minimum - _TOLERANCE
    relation = ">=" if passed else "is below the floor of"
    detail = f"accuracy {candidate.accuracy:.4f} {relation} {minimum:.4f}"
    return Check("accuracy floor", passed, detail)


def _regression(
    candidate: Evaluation, production: Evaluation | None, allowed: float, unavailable: str | None
) -> Check:
    if unavailable is not None:
        return Check("no regression", True, f"skipped: {unavailable}")
    if production is None:
        return Check("no regression", True, "no production model yet: first promotion")
    if production.count != candidate.count:
        raise ValueError(
            f"candidate evaluated on {candidate.count} images, production on {production.count}: "
            "the gate compares models on the same test set only"
        )
    change = candidate.accuracy - production.accuracy
    passed = -change <= allowed + _TOLERANCE
    comparison = (
        f"accuracy {candidate.accuracy:.4f} vs production {production.accuracy:.4f} ({change:+.4f})"
    )
    if passed:
        return Check("no regression", True, f"{comparison}, within the allowed -{allowed:.4f}")
    return Check(
        "no regression", False, f"{comparison}: worse than production by more than {allowed:.4f}"
    )


def _digit_recall(candidate: Evaluation, minimum: float) -> Check:
    measured = [m for m in candidate.per_digit if m.support > 0]
    if not measured:
        return Check("per-digit recall", False, "no test images: recall cannot be measured")
    low = sorted((m for m in measured if m.recall < minimum - _TOLERANCE), key=lambda m: m.recall)
    if low:
        listed = ", ".join(f"digit {m.digit} at {m.recall:.4f}" for m in low)
        return Check("per-digit recall", False, f"recall below {minimum:.4f}: {listed}")
    worst = min(measured, key=lambda m: m.recall)
    unmeasured = 10 - len(measured)
    note = f" ({unmeasured} digits absent from the test images)" if unmeasured else ""
    return Check(
        "per-digit recall",
        True,
        f"every digit >= {minimum:.4f}, lowest digit {worst.digit} at {worst.recall:.4f}{note}",
    )


def _holdout(holdout: Holdout | None, thresholds: Thresholds, unavailable: str | None) -> Check:
    name, count = "own-scans holdout", 0 if holdout is None else holdout.candidate.count
    if count == 0:
        return Check(name, True, "skipped: no own-scans holdout images")
    if count < thresholds.min_holdout:
        needed = thresholds.min_holdout
        return Check(name, True, f"skipped: {count} own-scans holdout images, fewer than {needed}")
    if unavailable is not None:
        return Check(name, True, f"skipped: {unavailable}")
    if holdout.production is None:
        return Check(name, True, "skipped: no production model to compare with")
    if holdout.production.count != count:
        raise ValueError("the gate compares models on the same own-scans holdout images only")
    ours, theirs = holdout.candidate.accuracy, holdout.production.accuracy
    change, allowed = ours - theirs, thresholds.holdout_tolerance
    comparison = (
        f"holdout accuracy {ours:.4f} vs production {theirs:.4f} ({change:+.4f}) "
        f"on {count} own scans"
    )
    if -change <= allowed + _TOLERANCE:
        return Check(name, True, f"{comparison}, within the allowed -{allowed:.4f}")
    return Check(name, False, f"{comparison}: worse than production by more than {allowed:.4f}")


def decide(
    candidate: Evaluation,
    production: Evaluation | None,
    thresholds: Thresholds,
    unavailable: str | None = None,
    holdout: Holdout | None = None,
) -> Decision:
    """Apply every rule to the candidate (and the production model's evaluation, if any).

    `unavailable` says why a production model exists but could not be evaluated; `holdout` is
    both models on the own-scans holdout (None: no holdout images).
    """
    checks = [
        _floor(candidate, thresholds.min_accuracy),
        _regression(candidate, production, thresholds.max_regression, unavailable),
        _digit_recall(candidate, thresholds.min_digit_recall),
        _holdout(holdout, thresholds, unavailable),
    ]
    failed = [c for c in checks if not c.passed]
    if failed:
        reason = "not promoted: " + "; ".join(f"{c.name}: {c.detail}" for c in failed)
        return Decision(False, reason, checks)
    floors = "; ".join(c.detail for c in checks if c.name in FLOORS)
    if unavailable is not None:
        reason = f"promoted on the floors alone ({unavailable}): {floors}"
    elif production is None:
        reason = f"promoted as the first model, on the floors alone (no production model): {floors}"
    else:
        reason = "promoted: " + "; ".join(c.detail for c in checks)
    return Decision(True, reason, checks)
