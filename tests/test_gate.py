"""The promotion gate on real evaluations of known predictions (no Prefect, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from digitflow.evaluate import Evaluation, metrics_from_probabilities
from digitflow.robustness import RobustnessScore
from flows.gate import Baseline, Scores, Thresholds, decide

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


def production(test: Evaluation, holdout: Evaluation | None = None) -> Baseline:
    """The production model's scores, as the gate compares with them."""
    return Baseline(scores=Scores(test, holdout))


def checks(decision) -> dict[str, bool]:
    return {check.name: check.passed for check in decision.checks}


def test_first_model_is_promoted_on_the_floors_alone():
    decision = decide(Scores(evaluation(spread(20))), None, Thresholds())

    assert decision.promote
    assert checks(decision) == {
        "accuracy floor": True,
        "no regression": True,
        "per-digit recall": True,
        "own-scans holdout": True,
        "robustness": True,
    }
    assert decision.reason.startswith("promoted as the first model, on the floors alone")
    assert "accuracy 0.9800 >= 0.9700" in decision.reason
    assert "no production model yet" in decision.checks[1].detail


def test_below_the_floor_is_rejected_with_the_numbers():
    decision = decide(Scores(evaluation(spread(31))), None, Thresholds())

    assert not decision.promote
    assert checks(decision)["accuracy floor"] is False
    assert decision.reason == (
        "not promoted: accuracy floor: accuracy 0.9690 is below the floor of 0.9700"
    )


def test_exactly_at_the_floor_passes():
    assert decide(Scores(evaluation(spread(30))), None, Thresholds()).promote


def test_regression_beyond_the_allowance_is_rejected():
    baseline = production(evaluation(spread(10)))  # 0.990
    candidate = Scores(evaluation(spread(13)))  # 0.987: 0.003 worse

    decision = decide(candidate, baseline, Thresholds())

    assert not decision.promote
    assert checks(decision) == {
        "accuracy floor": True,
        "no regression": False,
        "per-digit recall": True,
        "own-scans holdout": True,
        "robustness": True,
    }
    assert decision.reason == (
        "not promoted: no regression: accuracy 0.9870 vs production 0.9900 (-0.0030): "
        "worse than production by more than 0.0020"
    )


def test_regression_of_exactly_the_allowance_passes_despite_float_round_off():
    baseline = production(evaluation(spread(10)))  # 0.990 -> 0.988
    candidate = Scores(evaluation(spread(12)))
    assert 0.990 - 0.988 > 0.002  # what a naive comparison would get wrong

    decision = decide(candidate, baseline, Thresholds())

    assert decision.promote
    assert decision.reason.startswith("promoted: ")
    assert "(-0.0020), within the allowed -0.0020" in decision.reason


def test_improvement_is_promoted_with_the_comparison_in_the_reason():
    decision = decide(
        Scores(evaluation(spread(10))), production(evaluation(spread(20))), Thresholds()
    )

    assert decision.promote
    assert "accuracy 0.9900 vs production 0.9800 (+0.0100)" in decision.reason


def test_one_weak_digit_is_rejected_even_when_accuracy_passes():
    candidate = evaluation({8: 7, 3: 6})  # accuracy 0.987; recall of 8 is 0.93, of 3 is 0.94

    decision = decide(Scores(candidate), None, Thresholds())

    assert candidate.accuracy >= 0.97
    assert not decision.promote
    assert checks(decision)["per-digit recall"] is False
    assert decision.reason == (
        "not promoted: per-digit recall: recall below 0.9500: digit 8 at 0.9300, digit 3 at 0.9400"
    )


def test_every_failed_rule_is_in_the_reason():
    decision = decide(Scores(evaluation({5: 40})), production(evaluation({})), Thresholds())

    assert checks(decision) == {
        "accuracy floor": False,
        "no regression": False,
        "per-digit recall": False,
        "own-scans holdout": True,
        "robustness": True,
    }
    assert decision.reason.count(": ") >= 3
    for name in ("accuracy floor", "no regression", "per-digit recall"):
        assert name in decision.reason


def test_digits_missing_from_the_test_images_are_not_judged():
    decision = decide(Scores(evaluation({}, digits=range(8))), None, Thresholds())

    assert decision.promote
    assert "(2 digits absent from the test images)" in decision.checks[2].detail


def test_models_evaluated_on_different_test_sets_are_not_compared():
    with pytest.raises(ValueError, match="same test set"):
        decide(Scores(evaluation({})), production(evaluation({}, digits=range(9))), Thresholds())


@pytest.mark.parametrize(
    "field",
    [
        "min_accuracy",
        "max_regression",
        "min_digit_recall",
        "holdout_tolerance",
        "robustness_tolerance",
    ],
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
    mnist = evaluation(spread(10))  # 0.990 each, no regression there
    candidate = Scores(mnist, holdout=evaluation(spread(30)))

    decision = decide(candidate, production(mnist, evaluation(spread(15))), Thresholds())

    assert not decision.promote
    assert checks(decision) == {
        "accuracy floor": True,
        "no regression": True,
        "per-digit recall": True,
        "own-scans holdout": False,
        "robustness": True,
    }
    assert decision.reason == (
        "not promoted: own-scans holdout: holdout accuracy 0.9700 vs production 0.9850 (-0.0150) "
        "on 1000 own scans: worse than production by more than 0.0100"
    )


def test_holdout_regression_within_the_tolerance_passes():
    candidate = Scores(evaluation({}), holdout=evaluation(spread(25)))

    decision = decide(candidate, production(evaluation({}), evaluation(spread(15))), Thresholds())

    assert decision.promote
    assert "(-0.0100) on 1000 own scans, within the allowed -0.0100" in decision.reason


def test_too_few_holdout_images_skip_the_rule_and_say_so():
    candidate = Scores(evaluation({}), holdout=evaluation({5: 90}))  # far worse
    baseline = production(evaluation({}), evaluation({}))

    decision = decide(candidate, baseline, Thresholds(min_holdout=1001))

    assert decision.promote
    assert holdout_check(decision).detail == (
        "skipped: 1000 own-scans holdout images, fewer than 1001"
    )
    assert "skipped: 1000 own-scans holdout images, fewer than 1001" in decision.reason


@pytest.mark.parametrize(
    ("baseline", "holdout", "detail"),
    [
        (None, None, "skipped: no own-scans holdout images"),
        (None, evaluation({}), "skipped: no production model to compare with"),
        (Baseline(problem="v1 is broken"), evaluation({}), "skipped: v1 is broken"),
    ],
)
def test_the_holdout_rule_is_skipped_without_images_or_a_production_model(
    baseline, holdout, detail
):
    decision = decide(Scores(evaluation({}), holdout), baseline, Thresholds())

    assert decision.promote
    assert holdout_check(decision).detail == detail


def test_decision_is_plain_data_for_the_store_metadata():
    record = decide(Scores(evaluation({})), None, Thresholds()).to_dict()

    assert record["promote"] is True
    assert record["checks"][0] == {
        "name": "accuracy floor",
        "passed": True,
        "detail": "accuracy 1.0000 >= 0.9700",
    }


RETIRED = "production v2 was trained on retired span desk"


def test_a_baseline_other_than_production_is_named_and_its_rule_stated_in_every_reason():
    rule = f"{RETIRED}; compared with v1, the best model trained on active data only"
    better, worse = evaluation(spread(10)), evaluation(spread(13))  # 0.990, 0.987

    refused = decide(Scores(worse), Baseline("v1", 1, Scores(better), rule=rule), Thresholds())
    promoted = decide(Scores(better), Baseline("v1", 1, Scores(worse), rule=rule), Thresholds())

    assert refused.reason == (
        f"not promoted ({rule}): no regression: accuracy 0.9870 vs v1 0.9900 (-0.0030): "
        "worse than v1 by more than 0.0020"
    )
    assert promoted.promote
    assert promoted.reason.startswith(f"promoted ({rule}): accuracy 0.9900 >= 0.9700; ")
    assert "accuracy 0.9900 vs v1 0.9870 (+0.0030), within the allowed -0.0020" in promoted.reason


def test_without_a_baseline_to_compare_the_floors_alone_judge_and_the_rule_is_stated():
    none = "no model trained on active data only has served"
    baseline = Baseline(problem=none, rule=RETIRED)

    promoted = decide(Scores(evaluation(spread(20))), baseline, Thresholds())
    refused = decide(Scores(evaluation(spread(31))), baseline, Thresholds())

    assert promoted.reason.startswith(
        f"promoted on the floors alone ({RETIRED}; {none}): accuracy 0.9800 >= 0.9700; every digit"
    )
    assert promoted.checks[1].detail == f"skipped: {none}"
    assert refused.reason == (
        f"not promoted ({RETIRED}): accuracy floor: accuracy 0.9690 is below the floor of 0.9700"
    )


def on_suite(**per_style: float) -> RobustnessScore:
    """A score on a suite of 100 images per style, with these accuracies per style."""
    overall = sum(per_style.values()) / len(per_style)
    return RobustnessScore(overall, per_style, 100 * len(per_style), "suite-sha256")


def robustness_check(decision):
    [check] = [c for c in decision.checks if c.name == "robustness"]
    return check


def test_a_candidate_equal_on_mnist_but_worse_on_the_robustness_suite_is_refused():
    mnist = evaluation(spread(10))  # both 0.990 on MNIST
    candidate = Scores(mnist, robustness=on_suite(png=0.96, blurred=0.84, pencil=0.90))
    theirs = on_suite(png=0.96, blurred=0.90, pencil=0.90)  # 0.920

    decision = decide(candidate, Baseline(scores=Scores(mnist, robustness=theirs)), Thresholds())

    assert not decision.promote
    assert checks(decision)["no regression"] is True
    assert decision.reason == (
        "not promoted: robustness: robustness accuracy 0.9000 vs production 0.9200 (-0.0200) "
        "on 300 real-scan renderings, largest change blurred (-0.0600): worse than production "
        "by more than 0.0050"
    )


def test_a_robustness_loss_within_the_tolerance_passes():
    candidate = Scores(evaluation({}), robustness=on_suite(png=0.95, jpeg=0.90))  # 0.925
    baseline = Baseline(scores=Scores(evaluation({}), robustness=on_suite(png=0.95, jpeg=0.91)))

    decision = decide(candidate, baseline, Thresholds(robustness_tolerance=0.005))

    assert decision.promote
    assert robustness_check(decision).detail.endswith(
        "(-0.0050) on 200 real-scan renderings, largest change jpeg (-0.0100), within the "
        "allowed -0.0050"
    )


def test_the_robustness_rule_is_skipped_without_a_production_model_and_needs_one_suite():
    candidate = Scores(evaluation({}), robustness=on_suite(png=0.5))
    other = RobustnessScore(0.9, {"png": 0.9}, 100, "another-suite")

    first = decide(candidate, None, Thresholds())

    assert first.promote
    assert robustness_check(first).detail == "skipped: no production model to compare with"
    with pytest.raises(ValueError, match="same robustness suite"):
        decide(candidate, Baseline(scores=Scores(evaluation({}), robustness=other)), Thresholds())
