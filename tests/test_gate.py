"""The promotion gate on real evaluations of known predictions (no Prefect, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from digitflow.evaluate import Evaluation, metrics_from_probabilities
from flows.gate import Holdout, Thresholds, decide

PER_DIGIT = 100  # 1,000 test images, 100 of each digit


def evaluation(wrong: dict[int, int], digits=range(10)) -> Evaluation:
    """An evaluation where `wrong[d]` images of digit d were predicted as the next digit."""
    labels = np.repeat(np.array(list(digits)), PER_DIGIT)
    predicted = labels.copy()
    for digit, count in wrong.items():
        first = int(np.flatnonzero(labels == digit)[0])
        predicted[first : first + count] = (digit + 1) % 10
    return metrics_from_probabilities(np.eye(10)[predicted], labels)


def spread(errors: int) -> dict[int, int]:
    """`errors` mistakes spread evenly over the digits."""
    return {d: errors // 10 + (d < errors % 10) for d in range(10)}


def checks(decision) -> dict[str, bool]:
    return {check.name: check.passed for check in decision.checks}


def test_first_model_is_promoted_on_the_floors_alone():
    decision = decide(evaluation(spread(20)), None, Thresholds())

    assert decision.promote
    assert checks(decision) == {
        "accuracy floor": True,
        "no regression": True,
        "per-digit recall": True,
        "own-scans holdout": True,
    }
    assert decision.reason.startswith("promoted as the first model, on the floors alone")
    assert "accuracy 0.9800 >= 0.9700" in decision.reason
    assert "no production model yet" in decision.checks[1].detail


def test_below_the_floor_is_rejected_with_the_numbers():
    decision = decide(evaluation(spread(31)), None, Thresholds())

    assert not decision.promote
    assert checks(decision)["accuracy floor"] is False
    assert decision.reason == (
        "not promoted: accuracy floor: accuracy 0.9690 is below the floor of 0.9700"
    )


def test_exactly_at_the_floor_passes():
    assert decide(evaluation(spread(30)), None, Thresholds()).promote


def test_regression_beyond_the_allowance_is_rejected():
    production = evaluation(spread(10))  # 0.990
    candidate = evaluation(spread(13))  # 0.987: 0.003 worse

    decision = decide(candidate, production, Thresholds())

    assert not decision.promote
    assert checks(decision) == {
        "accuracy floor": True,
        "no regression": False,
        "per-digit recall": True,
        "own-scans holdout": True,
    }
    assert decision.reason == (
        "not promoted: no regression: accuracy 0.9870 vs production 0.9900 (-0.0030): "
        "worse than production by more than 0.0020"
    )


def test_regression_of_exactly_the_allowance_passes_despite_float_round_off():
    production, candidate = evaluation(spread(10)), evaluation(spread(12))  # 0.990 -> 0.988
    assert 0.990 - 0.988 > 0.002  # what a naive comparison would get wrong

    decision = decide(candidate, production, Thresholds())

    assert decision.promote
    assert decision.reason.startswith("promoted: ")
    assert "(-0.0020), within the allowed -0.0020" in decision.reason


def test_improvement_is_promoted_with_the_comparison_in_the_reason():
    decision = decide(evaluation(spread(10)), evaluation(spread(20)), Thresholds())

    assert decision.promote
    assert "accuracy 0.9900 vs production 0.9800 (+0.0100)" in decision.reason


def test_one_weak_digit_is_rejected_even_when_accuracy_passes():
    candidate = evaluation({8: 7, 3: 6})  # accuracy 0.987; recall of 8 is 0.93, of 3 is 0.94

    decision = decide(candidate, None, Thresholds())

    assert candidate.accuracy >= 0.97
    assert not decision.promote
    assert checks(decision)["per-digit recall"] is False
    assert decision.reason == (
        "not promoted: per-digit recall: recall below 0.9500: digit 8 at 0.9300, digit 3 at 0.9400"
    )


def test_every_failed_rule_is_in_the_reason():
    decision = decide(evaluation({5: 40}), evaluation({}), Thresholds())

    assert checks(decision) == {
        "accuracy floor": False,
        "no regression": False,
        "per-digit recall": False,
        "own-scans holdout": True,
    }
    assert decision.reason.count(": ") >= 3
    for name in ("accuracy floor", "no regression", "per-digit recall"):
        assert name in decision.reason


def test_digits_missing_from_the_test_images_are_not_judged():
    decision = decide(evaluation({}, digits=range(8)), None, Thresholds())

    assert decision.promote
    assert "(2 digits absent from the test images)" in decision.checks[2].detail


def test_models_evaluated_on_different_test_sets_are_not_compared():
    with pytest.raises(ValueError, match="same test set"):
        decide(evaluation({}), evaluation({}, digits=range(9)), Thresholds())


@pytest.mark.parametrize(
    "field", ["min_accuracy", "max_regression", "min_digit_recall", "holdout_tolerance"]
)
def test_thresholds_outside_zero_to_one_are_refused(field):
    with pytest.raises(ValueError, match=field):
        Thresholds(**{field: 1.5})


def test_a_negative_holdout_minimum_is_refused():
    with pytest.raises(ValueError, match="min_holdout"):
        Thresholds(min_holdout=-1)


def holdout_check(decision):
    [check] = [c for c in decision.checks if c.name == "own-scans holdout"]
    return check


def test_holdout_regression_beyond_the_tolerance_is_rejected():
    production = evaluation(spread(10))  # MNIST: 0.990 each, no regression there
    holdout = Holdout(candidate=evaluation(spread(30)), production=evaluation(spread(15)))

    decision = decide(evaluation(spread(10)), production, Thresholds(), holdout=holdout)

    assert not decision.promote
    assert checks(decision) == {
        "accuracy floor": True,
        "no regression": True,
        "per-digit recall": True,
        "own-scans holdout": False,
    }
    assert decision.reason == (
        "not promoted: own-scans holdout: holdout accuracy 0.9700 vs production 0.9850 (-0.0150) "
        "on 1000 own scans: worse than production by more than 0.0100"
    )


def test_holdout_regression_within_the_tolerance_passes():
    holdout = Holdout(candidate=evaluation(spread(25)), production=evaluation(spread(15)))

    decision = decide(evaluation({}), evaluation({}), Thresholds(), holdout=holdout)

    assert decision.promote
    assert "(-0.0100) on 1000 own scans, within the allowed -0.0100" in decision.reason


def test_too_few_holdout_images_skip_the_rule_and_say_so():
    holdout = Holdout(candidate=evaluation({5: 90}), production=evaluation({}))  # far worse

    decision = decide(evaluation({}), evaluation({}), Thresholds(min_holdout=1001), holdout=holdout)

    assert decision.promote
    assert holdout_check(decision).detail == (
        "skipped: 1000 own-scans holdout images, fewer than 1001"
    )
    assert "skipped: 1000 own-scans holdout images, fewer than 1001" in decision.reason


@pytest.mark.parametrize(
    ("production", "holdout", "unavailable", "detail"),
    [
        (None, None, None, "skipped: no own-scans holdout images"),
        (None, Holdout(evaluation({})), None, "skipped: no production model to compare with"),
        (evaluation({}), Holdout(evaluation({})), "v1 is broken", "skipped: v1 is broken"),
    ],
)
def test_the_holdout_rule_is_skipped_without_images_or_a_production_model(
    production, holdout, unavailable, detail
):
    decision = decide(evaluation({}), production, Thresholds(), unavailable, holdout)

    assert decision.promote
    assert holdout_check(decision).detail == detail


def test_decision_is_plain_data_for_the_store_metadata():
    record = decide(evaluation({}), None, Thresholds()).to_dict()

    assert record["promote"] is True
    assert record["checks"][0] == {
        "name": "accuracy floor",
        "passed": True,
        "detail": "accuracy 1.0000 >= 0.9700",
    }
