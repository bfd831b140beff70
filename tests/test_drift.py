"""Drift: PSI and the verdict on hand-made profiles, then one real bulk run per kind of folder
against a model registered with its reference profile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from beam_jobs.classify import run
from beam_jobs.drift import NO_DRIFT, NO_REFERENCE, compare, psi, reference_profile
from beam_jobs.options import ClassifyOptions
from digitflow.evaluate import PredictionProfile, evaluate
from digitflow.scans import write_scans
from model_store import CorruptVersion, InvalidCard, Metrics, ModelStore, Reference, build_card

IN_PROCESS = "--direct_running_mode=in_memory"
LIMITS = {"max_psi": 0.25, "max_low_confidence_ratio": 3.0, "min_images": 100}
REFERENCE = PredictionProfile([0.1] * 10, 0.97, 0.03, 10_000)


def profile(counts: list[int], low: int) -> PredictionProfile:
    """A run's profile from predicted-digit counts and how many were below 0.8."""
    return PredictionProfile.from_counts(counts, 0.9 * sum(counts), low)


def test_psi_is_zero_for_the_same_mix_and_counts_empty_classes():
    assert psi([0.1] * 10, [0.1] * 10) == 0.0
    assert psi([0.12, 0.08] * 5, [0.1] * 10) == pytest.approx(0.0405, abs=1e-4)
    assert psi([0.0] + [1 / 9] * 9, [0.1] * 10) > 0.5  # an empty class: epsilon, no error


def test_balanced_run_has_no_drift():
    drift = compare(
        profile([100, 95, 105, 98, 102, 100, 97, 103, 99, 101], low=30), REFERENCE, **LIMITS
    )

    assert drift.verdict == NO_DRIFT
    assert not drift.detected
    assert drift.psi < 0.01
    assert drift.line().startswith("no drift (PSI 0.00; low-confidence 3% vs 3% in training)")


def test_one_digit_skew_names_the_digit():
    counts = [60] * 10
    counts[1] = 460  # 460 of 1,000: 46% ones

    drift = compare(profile(counts, low=30), REFERENCE, **LIMITS)

    assert drift.verdict == "drift: digit 1 at 46% vs 10% in training"
    assert drift.detected


def test_more_low_confidence_is_drift():
    drift = compare(profile([100] * 10, low=270), REFERENCE, **LIMITS)

    assert drift.verdict == "drift: low-confidence 9.0x"


def test_both_at_once():
    drift = compare(profile([10] * 9 + [910], low=500), REFERENCE, **LIMITS)

    assert drift.verdict == "drift: digit 9 at 91% vs 10% in training; low-confidence 16.7x"


def test_not_checked_without_reference_or_with_too_few_images():
    run_profile = profile([10] * 10, low=0)

    assert compare(run_profile, None, **LIMITS).verdict == NO_REFERENCE
    too_few = compare(run_profile, REFERENCE, **{**LIMITS, "min_images": 200})
    assert too_few.verdict == "drift: not checked (only 100 images classified, fewer than 200)"
    assert not too_few.detected and too_few.psi is None


def test_reference_profile_from_metadata():
    assert reference_profile({"reference": REFERENCE.to_dict()}) == REFERENCE
    assert reference_profile({"metrics": {}}) is None
    assert reference_profile({"reference": {"digit_share": [1.0]}}) is None


def test_drift_reads_the_reference_through_the_model_card(model_file: Path, mnist) -> None:
    import keras

    evaluation = evaluate(
        keras.saving.load_model(model_file), mnist.x_test[:500], mnist.y_test[:500]
    )
    store = ModelStore()
    card = build_card(
        metrics=Metrics.from_evaluation(evaluation),
        params={},
        architecture="dense",
        dataset_checksum="sha256:test",
        reference=Reference.from_profile(evaluation.profile),
    )
    store.register(model_file, card)
    store.promote(1, reason="test", actor="test")

    resolved = store.resolve("production")
    assert resolved.card.reference == Reference.from_profile(evaluation.profile)
    assert reference_profile(resolved.card) == evaluation.profile
    assert reference_profile(resolved.metadata) == evaluation.profile  # what the bulk job passes
    assert reference_profile(store.resolve(model_file).card) is None  # a file: no reference
    # A reference that is not a profile never reaches a bulk run: refused at registration, and
    # one written on disk makes the version corrupt (one line), not a silent "no reference".
    bad = {**evaluation.profile.to_dict(), "digit_share": [1.0]}
    with pytest.raises(InvalidCard, match=r"^reference\.digit_share must be 10 numbers"):
        store.register(model_file, {"metrics": {}, "reference": bad})
    path = Path(store.root) / "versions" / "1" / "metadata.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "reference": bad}))
    with pytest.raises(CorruptVersion, match=r"reference\.digit_share must be 10 numbers"):
        store.resolve("production")


@pytest.fixture
def production(trained_model_path: Path, mnist) -> ModelStore:
    """The trained model as v1 in production, with its reference profile as retrain records it."""
    import keras

    model = keras.saving.load_model(trained_model_path)
    reference = evaluate(model, mnist.x_test[:2000], mnist.y_test[:2000]).profile
    store = ModelStore()
    store.register(trained_model_path, {"metrics": {}, "reference": reference.to_dict()})
    store.promote(1, reason="test", actor="test")
    return store


def test_bulk_run_reports_drift_for_one_digit_and_none_for_a_balanced_folder(
    production, mnist, tmp_path
):
    labels = mnist.y_test
    ones = np.flatnonzero(labels == 1)[:30]
    balanced = np.concatenate([np.flatnonzero(labels == d)[:3] for d in range(10)])
    write_scans(mnist.x_test[ones], labels[ones], tmp_path / "ones", seed=1)
    write_scans(mnist.x_test[balanced], labels[balanced], tmp_path / "mixed", seed=2)

    skewed, even = (
        run(
            ClassifyOptions(
                str(tmp_path / folder), str(tmp_path / f"{folder}.csv"), drift_min_images=30
            ),
            [IN_PROCESS],
        )
        for folder in ("ones", "mixed")
    )

    assert skewed.drift.verdict.startswith("drift: digit 1 at 10"), skewed.drift  # 100%
    assert skewed.drift.verdict in skewed.report()
    assert even.drift.verdict == NO_DRIFT, even.drift
    assert even.to_dict()["drift"]["verdict"] == NO_DRIFT
    assert even.to_dict()["drift"]["run"]["count"] == 30
