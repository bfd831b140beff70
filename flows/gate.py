"""The promotion gate: should a candidate replace the production model? Pure, no Prefect.

Five rules, each recorded with a human-readable outcome:

- accuracy floor: MNIST test accuracy >= `min_accuracy` (the mission's 97%);
- no regression: at most `max_regression` below the baseline, both evaluated on the same test
  images in the same run (skipped, and said so, when there is no baseline or it cannot be
  evaluated: the candidate is then judged on the floors alone);
- per-digit recall: every digit with test examples has recall >= `min_digit_recall`;
- own-scans holdout: on the labelled spans' pooled holdout, at most `holdout_tolerance` below
  the baseline on the same images (skipped, and said so, with fewer than `min_holdout` images or
  no baseline to compare with);
- real-scan robustness: on a fixed suite of MNIST test digits rendered as real scans, photos
  and files (`digitflow.robustness`), at most `robustness_tolerance` below the baseline
  (skipped, and said so, with no baseline to compare with).

The baseline is normally the production model; the flow picks another (and says why in its
`rule`, which every reason then states) when production was trained on data since retired.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from digitflow.options import check_bounds, option

if TYPE_CHECKING:  # keeps this module import-cheap for the CLI, which reads the defaults
    from digitflow.evaluate import Evaluation
    from digitflow.robustness import RobustnessScore

# Accuracies are ratios of image counts; a difference that is exactly the threshold in images
# must not fail on float round-off (0.9900 - 0.9880 = 0.0020000000000000018).
_TOLERANCE = 1e-9
FLOORS = ("accuracy floor", "per-digit recall")  # the rules that need no production model


@dataclass(frozen=True)
class Thresholds:
    """The gate's parameters, each an option of `digitflow retrain` (`flows.options`); the
    defaults are the nightly run's. A value outside its bounds is a ValueError."""

    min_accuracy: float = option(
        0.97, help="Gate: lowest test accuracy to promote.", min=0.0, max=1.0
    )
    max_regression: float = option(
        0.002, help="Gate: most accuracy the candidate may lose vs production.", min=0.0, max=1.0
    )
    # The 97% floor applied to each digit, less 2 points: hard digits (8, 9, 5) sit a little
    # below the mean and, with ~1,000 test images per digit, recall has ~0.5 point of noise.
    min_digit_recall: float = option(
        0.95, help="Gate: lowest recall allowed for any digit.", min=0.0, max=1.0
    )
    # Own scans are few: below `min_holdout` images the comparison is skipped as noise. One image
    # is 1/n of accuracy, so the tolerance forgives a single extra mistake only from 100 images.
    min_holdout: int = option(
        50, help="Gate: fewest own-scans holdout images for the holdout rule to apply.", min=0
    )
    holdout_tolerance: float = option(
        0.01,
        help="Gate: most own-scans holdout accuracy the candidate may lose vs production.",
        min=0.0,
        max=1.0,
    )
    # The suite has thousands of images: half a point is tens of them, beyond seed noise.
    robustness_tolerance: float = option(
        0.005,
        help="Gate: most real-scan robustness accuracy the candidate may lose vs production.",
        min=0.0,
        max=1.0,
    )

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass(frozen=True)
class Scores:
    """One model on the gate's evidence: MNIST's test set, the own-scans holdout (None: no
    holdout images) and the real-scan robustness suite (None: not scored)."""

    test: Evaluation
    holdout: Evaluation | None = None
    robustness: RobustnessScore | None = None


@dataclass(frozen=True)
class Baseline:
    """What the candidate is compared with, as the reasons name it (`name`), and its version:
    its `scores` on the same images, or None and `problem` saying why there are none (the
    candidate is then judged on the floors alone). `rule`: why it is not the production model."""

    name: str = "production"
    version: int | None = None
    scores: Scores | None = None
    problem: str | None = None
    rule: str | None = None


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


def _regression(candidate: Scores, baseline: Baseline | None, allowed: float) -> Check:
    name = "no regression"
    if baseline is None:
        return Check(name, True, "no production model yet: first promotion")
    if baseline.scores is None:
        return Check(name, True, f"skipped: {baseline.problem}")
    ours, theirs = candidate.test, baseline.scores.test
    if theirs.count != ours.count:
        raise ValueError(
            f"candidate evaluated on {ours.count} images, {baseline.name} on {theirs.count}: "
            "the gate compares models on the same test set only"
        )
    return _compared(name, "accuracy", ours.accuracy, theirs.accuracy, baseline.name, allowed)


def _compared(
    name: str, what: str, ours: float, theirs: float, baseline: str, allowed: float, on: str = ""
) -> Check:
    """Passes unless `ours` is more than `allowed` below `theirs`; says both and the change."""
    change = ours - theirs
    comparison = f"{what} {ours:.4f} vs {baseline} {theirs:.4f} ({change:+.4f}){on}"
    if -change <= allowed + _TOLERANCE:
        return Check(name, True, f"{comparison}, within the allowed -{allowed:.4f}")
    return Check(name, False, f"{comparison}: worse than {baseline} by more than {allowed:.4f}")


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


def _holdout(candidate: Scores, baseline: Baseline | None, thresholds: Thresholds) -> Check:
    name, ours = "own-scans holdout", candidate.holdout
    count = 0 if ours is None else ours.count
    if ours is None or count == 0:
        return Check(name, True, "skipped: no own-scans holdout images")
    if count < thresholds.min_holdout:
        needed = thresholds.min_holdout
        return Check(name, True, f"skipped: {count} own-scans holdout images, fewer than {needed}")
    if baseline is None:
        return Check(name, True, "skipped: no production model to compare with")
    if baseline.scores is None:
        return Check(name, True, f"skipped: {baseline.problem}")
    theirs = baseline.scores.holdout
    if theirs is None or theirs.count != count:
        raise ValueError("the gate compares models on the same own-scans holdout images only")
    on = f" on {count} own scans"
    return _compared(
        name,
        "holdout accuracy",
        ours.accuracy,
        theirs.accuracy,
        baseline.name,
        thresholds.holdout_tolerance,
        on,
    )


def _robustness(candidate: Scores, baseline: Baseline | None, allowed: float) -> Check:
    name, ours = "robustness", candidate.robustness
    if ours is None:
        return Check(name, True, "skipped: not scored on the robustness suite")
    if baseline is None:
        return Check(name, True, "skipped: no production model to compare with")
    if baseline.scores is None:
        return Check(name, True, f"skipped: {baseline.problem}")
    theirs = baseline.scores.robustness
    if theirs is None or theirs.suite != ours.suite:
        raise ValueError("the gate compares models on the same robustness suite only")
    drops = {style: ours.per_style[style] - theirs.per_style[style] for style in ours.per_style}
    worst = min(drops, key=drops.__getitem__)
    on = f" on {ours.count} real-scan renderings, largest change {worst} ({drops[worst]:+.4f})"
    return _compared(
        name, "robustness accuracy", ours.accuracy, theirs.accuracy, baseline.name, allowed, on
    )


def _reason(verdict: str, notes: list[str | None], details: list[str]) -> str:
    """`verdict (notes): details`, the notes left out when there are none."""
    given = [note for note in notes if note]
    context = f" ({'; '.join(given)})" if given else ""
    return f"{verdict}{context}: {'; '.join(details)}"


def decide(candidate: Scores, baseline: Baseline | None, thresholds: Thresholds) -> Decision:
    """Apply every rule to the candidate, compared with `baseline` (None: no production model).

    The reason states the baseline's `rule`, if any, whatever the verdict.
    """
    checks = [
        _floor(candidate.test, thresholds.min_accuracy),
        _regression(candidate, baseline, thresholds.max_regression),
        _digit_recall(candidate.test, thresholds.min_digit_recall),
        _holdout(candidate, baseline, thresholds),
        _robustness(candidate, baseline, thresholds.robustness_tolerance),
    ]
    rule = None if baseline is None else baseline.rule
    failed = [c for c in checks if not c.passed]
    if failed:
        details = [f"{c.name}: {c.detail}" for c in failed]
        return Decision(False, _reason("not promoted", [rule], details), checks)
    floors = [c.detail for c in checks if c.name in FLOORS]
    if baseline is None:
        verdict = "promoted as the first model, on the floors alone"
        reason = _reason(verdict, ["no production model"], floors)
    elif baseline.scores is None:
        reason = _reason("promoted on the floors alone", [rule, baseline.problem], floors)
    else:
        reason = _reason("promoted", [rule], [c.detail for c in checks])
    return Decision(True, reason, checks)
