"""The model card on a real local store with a real `.keras` file: what the flow writes
round-trips field by field, bad metrics are refused before anything is stored, every shape an
earlier release wrote still loads, and a bad value on disk is a corrupt version, not a crash."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from digitflow.locations import sha256_file
from model_store import (
    SCHEMA_VERSION,
    CorruptVersion,
    GateCheck,
    GateVerdict,
    HoldoutScores,
    InvalidCard,
    Metrics,
    ModelCard,
    ModelStore,
    Reference,
    Robustness,
    Score,
    SpanUse,
    build_card,
)

BAD_METRICS = [
    ({"accuracy": 0.9, "recall": [0.9, 0.8]}, "recall must be an object keyed by digit 0-9"),
    ({"accuracy": 7}, "accuracy must be a number in [0, 1], got 7"),
    ({"accuracy": "0.9"}, "accuracy must be a number in [0, 1], got '0.9'"),
    ({"loss": -0.1}, "loss must be a finite number >= 0, got -0.1"),
    ({"count": 10.5}, "count must be a whole number >= 0, got 10.5"),
    ({"precision": {"10": 0.5}}, "precision must be keyed by digit 0-9, got key '10'"),
    ({"recall": {"3": True}}, "recall[3] must be a number in [0, 1], got True"),
    ({"per_digit": [{"digit": 3, "recall": 1.2}]}, "recall[3] must be a number in [0, 1]"),
]

PROFILE = {
    "digit_share": [0.098, 0.114, 0.103, 0.101, 0.098, 0.089, 0.096, 0.103, 0.097, 0.101],
    "mean_confidence": 0.981,
    "low_confidence_rate": 0.021,
    "count": 10_000,
    "threshold": 0.8,
}


def flow_card() -> ModelCard:
    """A card with every part the nightly flow (and the robustness gate) writes."""
    digits = range(10)
    return build_card(
        metrics=Metrics(
            accuracy=0.9912,
            loss=0.031,
            count=10_000,
            precision={d: 0.99 - d / 1000 for d in digits},
            recall={d: 0.98 + d / 1000 for d in digits},
            support={d: 1000 for d in digits},
        ),
        params={"profile": "fast", "epochs": 3, "seed": 0, "train_limit": None, "force": False},
        architecture="cnn",
        dataset_checksum="sha256:abc+spans:def",
        flow_run_id="0b5e-flow-run",
        identity="f" * 64,
        spans=SpanUse(names=("phone-2025-01",), checksum="def", train_images=80, holdout_images=20),
        holdout=HoldoutScores(
            candidate=Score(accuracy=0.95, count=20), production=Score(accuracy=0.9, count=20)
        ),
        reference=Reference(**PROFILE),
        gate=GateVerdict(
            promote=True,
            reason="passed all checks",
            checks=(GateCheck("accuracy floor", True, "0.9912 >= 0.97"),),
            thresholds={"min_accuracy": 0.97, "min_holdout": 50},
            compared_with=3,
        ),
        robustness=Robustness(
            accuracy=0.91, per_style={"jpeg": 0.95, "askew": 0.87}, count=3000, suite="c0ffee"
        ),
        registered_by="prefect-flow-run:0b5e",
        reason="nightly",
        extra={"comparison": {"candidate": 0.9912, "production": 0.9901}},
    )


def write_version(root: Path, number: int, model: Path, record: dict[str, Any]) -> Path:
    """A version folder as an earlier release left it: the model, then metadata.json by hand."""
    directory = root / "versions" / str(number)
    directory.mkdir(parents=True)
    shutil.copyfile(model, directory / "model.keras")
    record = {**record, "version": number, "model_sha256": sha256_file(directory / "model.keras")}
    (directory / "metadata.json").write_text(json.dumps(record, indent=2))
    return directory / "metadata.json"


PROVENANCE = {
    "created_at": "2025-01-31T02:00:00+00:00",
    "code_version": "67e0848",
    "library_versions": {"keras": "3.8.0", "tensorflow": "2.18.0", "prefect": None},
}
LEGACY = {
    # 82c6125: the first release's `digitflow models register --metrics-json eval.json`
    "cli-evaluate-json": {
        **PROVENANCE,
        "metrics": {
            "accuracy": 0.9712,
            "loss": 0.09,
            "count": 10_000,
            "per_digit": [
                {"digit": d, "precision": 0.97, "recall": 0.96 + d / 1000, "support": 1000}
                for d in range(10)
            ],
            "confusion": [[1000 if i == j else 0 for j in range(10)] for i in range(10)],
            "profile": PROFILE,
        },
        "params": {},
        "dataset_checksum": None,
        "flow_run_id": None,
        "architecture": "Sequential(InputLayer, Flatten, Dense)",
        "registered_by": "cli:ann@host",
        "reason": "by hand",
    },
    # e92732c .. 046ae42: the nightly flow before spans
    "flow-before-spans": {
        **PROVENANCE,
        "metrics": {
            "accuracy": 0.9901,
            "loss": 0.03,
            "test_images": 10_000,
            "recall": {str(d): 0.985 for d in range(10)},
        },
        "params": {"profile": "full", "epochs": 12, "train_limit": None, "test_limit": None},
        "architecture": "cnn",
        "dataset_checksum": "sha256:abc",
        "flow_run_id": "run-1",
        "gate": {
            "promote": False,
            "reason": "accuracy 0.9901 is below production's 0.9950 by more than 0.002",
            "checks": [{"name": "no regression", "passed": False, "detail": "-0.0049"}],
            "thresholds": {"min_accuracy": 0.97, "max_regression": 0.002},
            "compared_with": 1,
        },
        "promotion": "lost the promotion race to v4",
    },
    # 34e9d61 .. today: identity, spans, holdout, reference
    "flow-with-spans": {
        **PROVENANCE,
        "metrics": {
            "accuracy": 0.9935,
            "loss": 0.021,
            "test_images": 10_000,
            "recall": {str(d): 0.99 for d in range(10)},
        },
        "params": {"profile": "fast", "force": False},
        "architecture": "cnn",
        "dataset_checksum": "sha256:abc+spans:def",
        "flow_run_id": "run-2",
        "identity": "e" * 64,
        "spans": {"names": ["a", "b"], "checksum": "def", "train_images": 8, "holdout_images": 2},
        "holdout": {"candidate": {"accuracy": 1.0, "count": 2}, "production": None},
        "reference": PROFILE,
        "gate": {
            "promote": True,
            "reason": "passed",
            "checks": [],
            "thresholds": {"min_accuracy": 0.97, "min_holdout": 50},
            "compared_with": None,
        },
    },
    # the README's own example: `per_digit` as digit -> number, and a key of the user's own
    "readme-per-digit-map": {
        **PROVENANCE,
        "metrics": {"accuracy": 0.991, "loss": 0.03, "per_digit": {"0": 0.99, "1": 0.98}},
        "params": {"epochs": 1},
        "architecture": "dense",
        "dataset_checksum": "sha256:0123",
        "flow_run_id": "flow-run-42",
        "source": "laptop",
    },
}


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store")


@pytest.mark.parametrize(("metrics", "message"), BAD_METRICS)
def test_register_refuses_bad_metrics_and_stores_nothing(
    store: ModelStore, model_file: Path, metrics: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidCard) as refused:
        store.register(model_file, {"metrics": metrics})

    assert str(refused.value).startswith(f"metrics.{message}")
    assert "\n" not in str(refused.value)
    assert store.listing().versions == [] and store.listing().corrupt == []
    assert not (Path(store.root) / "versions").exists() or not any(
        (Path(store.root) / "versions").iterdir()
    )


def test_a_card_cannot_be_built_with_a_bad_value() -> None:
    with pytest.raises(InvalidCard, match=r"^accuracy must be a number in \[0, 1\], got 7$"):
        Metrics(accuracy=7)
    with pytest.raises(InvalidCard, match=r"^robustness\.per_style\[jpeg\] must be a number"):
        ModelCard(robustness={"overall": 0.9, "per_style": {"jpeg": 95}})
    with pytest.raises(InvalidCard, match=r"^holdout\.candidate\.accuracy must be a number"):
        replace(flow_card(), holdout={"candidate": {"accuracy": "high"}})
    with pytest.raises(InvalidCard, match=r"^reference\.digit_share must be 10 numbers"):
        ModelCard.from_dict({"metrics": {}, "reference": {**PROFILE, "digit_share": [1.0]}})
    with pytest.raises(InvalidCard, match=r"^gate\.checks\[0\] has no name$"):
        ModelCard.from_dict({"metrics": {}, "gate": {"checks": [{"passed": True}]}})


def test_a_registered_card_round_trips_every_field(store: ModelStore, model_file: Path) -> None:
    written = flow_card()

    version = store.register(model_file, written)
    card = store.get(version.version).card

    assert card == replace(
        written, version=1, model_sha256=sha256_file(model_file), schema_version=SCHEMA_VERSION
    )
    unset = [item.name for item in fields(card) if getattr(card, item.name) in (None, {}, ())]
    assert unset == ["promotion"]  # set after registration only, below
    assert ModelCard.from_dict(card.to_dict()) == card
    on_disk = json.loads((Path(store.root) / "versions" / "1" / "metadata.json").read_text())
    assert on_disk == card.to_dict() == version.metadata
    assert on_disk["schema_version"] == SCHEMA_VERSION == 2
    assert on_disk["metrics"]["recall"]["9"] == 0.989  # digit keys are JSON strings
    assert card.metrics.recall[9] == 0.989  # and ints in the card
    assert on_disk["comparison"] == {"candidate": 0.9912, "production": 0.9901}  # extra kept
    # What the readers ask, typed.
    assert card.metrics.lowest_recall() == (0, 0.98)
    assert (card.span_names, card.holdout_accuracy, card.outcome) == (
        ("phone-2025-01",),
        0.95,
        "promoted",
    )
    assert card.reference_profile().to_dict() == PROFILE
    assert card.robustness.per_style == {"jpeg": 0.95, "askew": 0.87}
    assert store.resolve(1).card == card

    annotated = store.annotate(1, {"promotion": "lost the promotion race to v2"}).card
    assert annotated == replace(card, promotion="lost the promotion race to v2")
    assert annotated.outcome == "lost the promotion race to v2"


def test_a_dict_registers_as_a_card_with_provenance_filled(
    store: ModelStore, model_file: Path
) -> None:
    version = store.register(model_file, {"metrics": {"accuracy": 0.97}, "note": "hand"})

    card = version.card
    assert card.schema_version == SCHEMA_VERSION and card.metrics.accuracy == 0.97
    assert card.created_at and card.library_versions["keras"]
    assert card.architecture == "Sequential(InputLayer, Flatten, Dense)"
    assert card.extra == {"note": "hand"}
    assert version.metadata["note"] == "hand" and "code_version" in version.metadata


@pytest.mark.parametrize("shape", sorted(LEGACY))
def test_metadata_an_earlier_release_wrote_still_loads(
    store: ModelStore, model_file: Path, shape: str
) -> None:
    record = LEGACY[shape]
    write_version(Path(store.root), 1, model_file, record)
    store.promote(1, reason="old", actor="test")

    version = store.get("production")
    card = version.card
    assert card.schema_version == 1
    assert card.metrics.accuracy == record["metrics"]["accuracy"]
    assert version.metadata == {**record, "version": 1, "model_sha256": card.model_sha256}
    assert store.resolve("production").card == card
    # Nothing is lost: the card writes every value back, in today's shape.
    again = card.to_dict()
    assert ModelCard.from_dict(again) == card
    for key, value in record.items():
        if key != "metrics":
            assert again[key] == value, key
    if shape == "cli-evaluate-json":
        assert card.metrics.count == 10_000 and card.metrics.support[4] == 1000
        assert card.metrics.lowest_recall() == (0, 0.96)
        assert card.metrics.extra["profile"] == PROFILE and card.outcome == "registered by hand"
    if shape == "flow-before-spans":
        assert card.metrics.count == 10_000 and "test_images" not in card.metrics.extra
        assert card.outcome == "lost the promotion race to v4" and card.gate.compared_with == 1
        assert card.span_names == () and card.holdout_accuracy is None
    if shape == "flow-with-spans":
        assert card.span_names == ("a", "b") and card.holdout_accuracy == 1.0
        assert card.identity == "e" * 64 and card.reference.count == 10_000
        assert card.holdout.production is None and again["holdout"]["production"] is None
    if shape == "readme-per-digit-map":
        assert card.metrics.extra["per_digit"] == {"0": 0.99, "1": 0.98}
        assert card.extra == {"source": "laptop"}


@pytest.mark.parametrize(
    ("metrics", "problem"),
    [
        ({"accuracy": "0.9"}, "metrics.accuracy must be a number in [0, 1], got '0.9'"),
        ({"accuracy": 0.9, "recall": [0.9, 0.8]}, "metrics.recall must be an object keyed"),
    ],
)
def test_a_bad_value_on_disk_is_a_corrupt_version_not_a_crash(
    store: ModelStore, model_file: Path, metrics: dict[str, Any], problem: str
) -> None:
    store.register(model_file, {"metrics": {"accuracy": 0.97}})
    write_version(
        Path(store.root), 2, model_file, {**LEGACY["flow-with-spans"], "metrics": metrics}
    )

    listing = store.listing()
    assert [v.version for v in listing.versions] == [1]  # the history table never sees v2
    [corrupt] = listing.corrupt
    assert corrupt.problem.startswith(f"v2: metadata.json is corrupt: {problem}")
    with pytest.raises(CorruptVersion, match=r"^v2: metadata\.json is corrupt: metrics\."):
        store.get(2)
    store.promote(1, reason="still serves", actor="test")  # the rest of the store works
    assert store.resolve("production").version == 1


def test_robustness_reads_the_score_as_the_suite_writes_it() -> None:
    score = {"accuracy": 0.93, "per_style": {"jpeg": 0.95, "photo": 0.88}, "count": 3000}
    card = ModelCard.from_dict({"metrics": {}, "robustness": {**score, "suite": "c0ffee"}})

    assert card.robustness.to_dict() == {**score, "suite": "c0ffee"}
    assert card.robustness.overall == 0.93
    assert ModelCard(robustness={"overall": 0.9}).robustness.accuracy == 0.9
    with pytest.raises(InvalidCard, match=r"^robustness\.count must be a whole number"):
        ModelCard(robustness={**score, "count": -1})
