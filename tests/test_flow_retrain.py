"""The retrain flow under Prefect's test harness, on a small slice of MNIST with a quick MLP:
first promotion, rejection by each gate rule, a training failure, artifacts, the CLI's exits."""

from __future__ import annotations

import json
from base64 import b64encode
from pathlib import Path
from uuid import UUID

import pytest
import typer
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from typer.testing import CliRunner

from flows.artifacts import HISTORY_KEY, PER_DIGIT_KEY, PROGRESS_KEY, REPORT_KEY
from flows.cli import register
from model_store import ModelStore

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

# One epoch of the MLP on 3,000 images: test accuracy ~0.81 on the first 1,000 test images,
# its weakest digit ~0.62. The floors are lowered to match; each test raises the one it checks.
QUICK = {"architecture": "mlp", "epochs": 1, "train_limit": 3000, "test_limit": 1000}
LOW_FLOORS = {"min_accuracy": 0.5, "min_digit_recall": 0.3}


def run_flow(**parameters):
    """Run the flow in this process; returns its final state."""
    from flows.retrain import retrain

    return retrain(**{**QUICK, **LOW_FLOORS, **parameters}, return_state=True)


def run_cli(*args: str):
    """`digitflow retrain ...` in this process, with the same quick settings (later args win)."""
    app = typer.Typer()
    register(app)
    quick = ["--arch=mlp", "--epochs=1", "--train-limit=3000", "--test-limit=1000"]
    floors = ["--min-accuracy=0.5", "--min-digit-recall=0.3"]
    return CliRunner().invoke(app, ["retrain", *quick, *floors, *args])


def read_artifacts(artifact_filter: ArtifactFilter) -> list:
    """Artifacts read back from the API."""
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=artifact_filter)


def artifacts(flow_run_id: UUID) -> dict:
    """The run's artifacts by key."""
    found = read_artifacts(ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {artifact.key: artifact for artifact in found}


def production_history(store: ModelStore) -> list[tuple[int | None, int]]:
    return [(entry.from_version, entry.to_version) for entry in store.history("production")]


def test_first_run_promotes_records_why_and_publishes_artifacts(digitflow_home: Path):
    state = run_flow()

    assert state.is_completed(), state.message
    assert state.name == "Promoted"
    run_id = state.state_details.flow_run_id
    assert state.message.startswith("candidate v1 promoted as the first model, on the floors alone")
    outcome = state.result()
    assert outcome.promoted and outcome.candidate_version == outcome.production_version == 1

    store = ModelStore()  # $DIGITFLOW_HOME/models
    assert store.aliases() == {"production": 1}
    [entry] = store.history()
    assert entry.actor == f"prefect-flow-run:{run_id}"
    assert entry.reason == outcome.reason
    metadata = store.get(1).metadata
    assert metadata["flow_run_id"] == str(run_id)
    assert metadata["metrics"]["accuracy"] == pytest.approx(outcome.accuracy)
    assert metadata["metrics"]["test_images"] == 1000
    assert metadata["dataset_checksum"].endswith("[:3000,:1000]")
    assert metadata["gate"]["promote"] is True and metadata["gate"]["compared_with"] is None
    assert metadata["params"]["architecture"] == "mlp"

    found = artifacts(run_id)
    assert set(found) == {REPORT_KEY, PER_DIGIT_KEY, HISTORY_KEY, PROGRESS_KEY}
    report = found[REPORT_KEY].data
    assert "# Retrain: v1 PROMOTED" in report
    assert "| accuracy floor | pass |" in report
    assert "production after this run: v1" in report
    assert "trained in this run" in report
    assert "file://" not in report
    image = Path(outcome.report_image)
    assert image.parent == digitflow_home / "reports"
    assert f"![v1 report](data:image/png;base64,{b64encode(image.read_bytes()).decode()})" in report
    assert f"`{image}`" in report  # the file on the flow's host, as plain text
    assert found[PER_DIGIT_KEY].type == "table"
    assert found[PROGRESS_KEY].type == "progress" and found[PROGRESS_KEY].data == 100.0
    [night] = json.loads(found[HISTORY_KEY].data)
    assert night["version"] == "v1" and night["decision"] == "promoted"
    assert night["production after"] == "v1"
    assert night["accuracy"] == round(outcome.accuracy, 4)


def test_below_the_floor_stays_registered_and_production_is_unchanged():
    first = run_cli()
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[-1].startswith("candidate v1 promoted")

    second = run_cli("--min-accuracy=0.99")

    assert second.exit_code == 3, second.output
    assert second.stdout.count("not promoted: accuracy floor") == 1  # said once, last
    assert second.stdout.splitlines()[-1].startswith(
        "candidate v2 not promoted: accuracy floor: accuracy 0.8"
    )
    assert "is below the floor of 0.9900" in second.stdout.splitlines()[-1]
    store = ModelStore()
    assert store.aliases() == {"production": 1}
    assert [v.version for v in store.list_versions()] == [1, 2]
    assert store.get(2).metadata["gate"]["promote"] is False
    assert production_history(store) == [(None, 1)]


def test_regression_against_production_is_rejected():
    better = run_flow(train_limit=6000, min_accuracy=0.3, min_digit_recall=0.0)
    assert better.result().promoted

    worse = run_flow(
        architecture="softmax", train_limit=1000, min_accuracy=0.3, min_digit_recall=0.0
    )

    assert worse.is_completed(), worse.message
    assert worse.name == "Not promoted"
    outcome = worse.result()
    assert not outcome.promoted
    assert outcome.reason.startswith("not promoted: no regression: accuracy ")
    assert "worse than production by more than 0.0020" in outcome.reason
    store = ModelStore()
    assert store.aliases() == {"production": 1}
    assert production_history(store) == [(None, 1)]
    report = artifacts(worse.state_details.flow_run_id)[REPORT_KEY].data
    assert "| no regression | FAIL |" in report
    assert "| metric | candidate v2 | production v1 |" in report


def test_weak_digit_is_rejected_with_the_model_reused_from_the_cache():
    assert run_flow().result().promoted

    state = run_flow(min_digit_recall=0.7)

    outcome = state.result()
    assert not outcome.promoted
    assert outcome.reason.startswith("not promoted: per-digit recall: recall below 0.7000: digit ")
    assert ModelStore().aliases() == {"production": 1}
    found = artifacts(state.state_details.flow_run_id)
    assert "reused from the cache" in found[REPORT_KEY].data  # same data and config: no training
    assert "| accuracy floor | pass |" in found[REPORT_KEY].data
    reports = read_artifacts(ArtifactFilter(key=ArtifactFilterKey(any_=[REPORT_KEY])))
    runs = {report.flow_run_id for report in reports}
    assert state.state_details.flow_run_id in runs and len(runs) >= 2  # one key across runs
    nights = json.loads(found[HISTORY_KEY].data)
    assert [(n["version"], n["decision"], n["production after"]) for n in nights] == [
        ("v2", "not promoted", "v1"),
        ("v1", "promoted", "v1"),
    ]


def test_training_failure_fails_the_run_and_leaves_production_alone():
    assert run_cli().exit_code == 0

    # Keras refuses the seed inside training itself: the train task raises.
    failed = run_cli("--seed=-1")

    assert failed.exit_code == 1, failed.output
    last = failed.stdout.splitlines()[-1]
    assert last.startswith("failed: ")
    assert "Seed must be between 0 and 2**32 - 1" in last
    store = ModelStore()
    assert [v.version for v in store.list_versions()] == [1]
    assert store.aliases() == {"production": 1}
    assert production_history(store) == [(None, 1)]


def test_a_production_model_that_no_longer_loads_does_not_block_the_nightly(
    digitflow_home: Path,
):
    assert run_flow().result().promoted
    damaged = digitflow_home / "models" / "versions" / "1" / "model.keras"
    damaged.write_bytes(b"bit rot")

    state = run_flow(train_limit=4000)

    assert state.name == "Promoted", state.message
    outcome = state.result()
    assert outcome.reason.startswith("promoted on the floors alone (production v1 cannot be ")
    assert "model file is corrupt" in outcome.reason
    store = ModelStore()
    assert store.aliases() == {"production": 2}
    assert store.get(2).metadata["gate"]["checks"][1]["detail"].startswith("skipped: production")


def test_an_unusable_store_fails_the_run_before_training(
    digitflow_home: Path, monkeypatch: pytest.MonkeyPatch
):
    not_a_folder = digitflow_home / "store-is-a-file"
    not_a_folder.write_text("oops")
    monkeypatch.setenv("DIGITFLOW_STORE", str(not_a_folder))

    result = run_cli()

    assert result.exit_code == 1, result.output
    assert str(not_a_folder) in result.stdout.splitlines()[-1]
    assert not (digitflow_home / "cache" / "candidates").exists()  # nothing was trained


def test_a_candidate_that_loses_the_promotion_race_is_recorded_as_such(model_file: Path):
    from prefect import flow

    from flows.retrain import promote

    store = ModelStore()
    first, second = (store.register(model_file, {"metrics": {}}) for _ in range(2))
    store.promote(first.version, expected=None, reason="the other run", actor="test")

    @flow
    def promote_after_the_gate_saw_no_production() -> int | None:
        return promote(None, second.version, "production", None, "passed", "test")

    after = promote_after_the_gate_saw_no_production()

    assert after == first.version
    assert store.aliases() == {"production": first.version}
    assert store.get(second.version).metadata["promotion"] == "lost the promotion race to v1"


def test_a_candidate_that_passes_the_gate_but_loses_the_race_is_not_promoted(model_file: Path):
    from prefect import flow

    from flows.gate import Decision
    from flows.options import RetrainOptions
    from flows.retrain import Promotion, promote_if_passed

    store = ModelStore()
    first, second = (store.register(model_file, {"metrics": {}}) for _ in range(2))
    store.promote(first.version, expected=None, reason="the other run", actor="test")

    @flow
    def promote_what_passed_against_no_production() -> Promotion:
        passed = Decision(True, "promoted as the first model")
        return promote_if_passed(RetrainOptions(), second.version, passed, None)

    promotion = promote_what_passed_against_no_production()

    assert promotion == Promotion(
        promoted=False,
        after=first.version,
        reason="not promoted: passed the gate but lost the promotion race to v1",
    )
    assert store.aliases() == {"production": first.version}
