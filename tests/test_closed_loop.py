"""The closed loop, end to end on real images: a nightly run promotes a model, a bulk run
classifies scans, a person reviews and corrects the labels (the unedited review is refused:
v1's own answers must never judge v1), `data add` stores them as a span, the next nightly
trains on it and is judged on its holdout, an identical night registers nothing, and a bulk
run of one digit is reported as drift."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_beam_classify import IN_PROCESS
from test_flow_retrain import run_flow

from beam_jobs.classify import main as run
from digitflow.data import Mnist
from digitflow.scans import write_scans
from model_store import ModelStore
from model_store.spans.store import SpanStore

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

DIGITFLOW = str(Path(sys.executable).with_name("digitflow"))
SCANS = 150


def digitflow(*args: str) -> str:
    done = subprocess.run([DIGITFLOW, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_reviewed_scans_train_the_next_nightly_and_bulk_runs_report_drift(
    mnist: Mnist, tmp_path: Path
):
    assert run_flow().name == "Promoted"  # v1, with its reference profile
    scans = tmp_path / "scans"
    write_scans(mnist.x_test[-SCANS:], mnist.y_test[-SCANS:], scans, seed=11)
    truth = {str(scans / row["file"]): row["label"] for row in read_csv(scans / "labels.csv")}
    results = tmp_path / "night-1" / "results.csv"
    run(["--input", str(scans), "--output", str(results), IN_PROCESS])

    # A person reviews every row, corrects the prefilled predictions and adds them back.
    digitflow("review", str(results), "--out", str(tmp_path / "review"), "--all", "--limit", "1000")
    reviewed = tmp_path / "review" / "labels.csv"
    predicted = {row["path"]: row["digit"] for row in read_csv(results)}
    prefilled = read_csv(reviewed)
    assert {row["path"]: row["label"] for row in prefilled} == predicted
    assert {row["source"] for row in prefilled} == {"model:v1"}
    unedited = subprocess.run(
        [DIGITFLOW, "data", "add", str(reviewed)], capture_output=True, text=True
    )
    assert unedited.returncode == 1  # v1's own answers would score v1 at 100% on the holdout
    assert f"{SCANS} of {SCANS} rows are a model's unconfirmed guesses" in unedited.stderr
    with reviewed.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows((row["path"], truth[row["path"]]) for row in prefilled)
    digitflow("data", "add", str(reviewed), "--name", "desk-scans")
    images = SpanStore().active_images()
    assert images.spans == ("desk-scans",)
    assert len(images.x_train) + len(images.x_holdout) == SCANS

    second = run_flow()
    assert second.name in ("Promoted", "Not promoted"), second.message
    trained = ModelStore().get(2).metadata
    assert trained["spans"]["names"] == ["desk-scans"]
    assert trained["holdout"]["candidate"]["count"] == len(images.x_holdout)

    third = run_flow()  # the same data and config: nothing trains, the decision stands
    expected = "Unchanged" if second.name == "Promoted" else "Not promoted"
    assert third.name == expected, third.message
    assert [version.version for version in ModelStore().list_versions()] == [1, 2]

    ones = np.flatnonzero(mnist.y_test == 1)[:SCANS]
    write_scans(mnist.x_test[ones], mnist.y_test[ones], tmp_path / "ones", seed=12)
    skewed = json.loads(
        digitflow("classify", str(tmp_path / "ones"), "-o", str(tmp_path / "ones.csv"), "--json")
    )
    assert skewed["images"] == SCANS
    assert skewed["drift"]["verdict"].startswith("drift: digit 1 at"), skewed["drift"]
