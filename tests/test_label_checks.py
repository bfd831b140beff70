"""Label checks on `digitflow data add`: a real trained production model in a real store, real
scans, the real CLI. Production's agreement with a span's labels is printed, the labels it
contradicts with confidence are warned about, and a span it mostly disagrees with is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_spans import cli, labels_csv, scans

from digitflow.data import model_input
from digitflow.preprocess import to_mnist
from model_store import ModelStore, SpanStore
from model_store.spans.checks import SUSPECT_LABEL, SUSPECT_OTHER

COUNT = 40


@pytest.fixture
def production(trained_model_path: Path) -> ModelStore:
    """A store whose production is v1, the 1-epoch CNN, with the accuracy it is recorded with."""
    store = ModelStore()
    store.register(trained_model_path, {"metrics": {"accuracy": 0.9}})
    store.promote(1, reason="test", actor="test")
    return store


def probabilities(store: ModelStore, folder: Path, rows: list[tuple[str, int]]) -> np.ndarray:
    """Production's probabilities for the scans, each as the model sees it."""
    pixels = [np.round(to_mnist((folder / name).read_bytes()) * 255) for name, _ in rows]
    images = model_input(np.stack(pixels).astype(np.uint8))
    return store.load_model("production").predict(images, verbose=0)


def test_add_prints_agreement_and_warns_of_labels_production_contradicts(
    production, tmp_path, mnist
):
    rows = scans(mnist, tmp_path, 0, COUNT)
    given = probabilities(production, tmp_path, rows)
    sure = [i for i, p in enumerate(given) if p.max() > SUSPECT_OTHER and p.argmax() == rows[i][1]]
    wrong = {i: int(np.argmin(given[i])) for i in sure[:3]}  # production gives it < 5%
    assert len(wrong) == 3 and all(given[i][d] < SUSPECT_LABEL for i, d in wrong.items())
    labelled = [(name, wrong.get(i, label)) for i, (name, label) in enumerate(rows)]
    agreed = sum(int(p.argmax()) == label for p, (_, label) in zip(given, labelled, strict=True))

    added = cli("add", labels_csv(tmp_path / "LABELS.csv", labelled), "--name", "desk")

    assert added.returncode == 0, added.stderr
    first = added.stdout.splitlines()[0]
    assert first.startswith(f"production v1 agrees with {agreed} of {COUNT} labels (")
    assert "; per digit 0-9: " in first
    warned = [line for line in added.stderr.splitlines() if line.startswith("warning: row ")]
    for i, digit in wrong.items():
        name, label = rows[i]
        line = f"warning: row {i + 1} ({name}): labelled {digit}, production v1 says {label} ("
        assert any(w.startswith(line) for w in warned), (line, warned)
    assert [span.name for span in SpanStore().spans()] == ["desk"]


def test_a_span_with_every_label_shifted_is_refused_unless_accepted(production, tmp_path, mnist):
    rows = [(name, (label + 1) % 10) for name, label in scans(mnist, tmp_path, 0, COUNT)]
    shifted = labels_csv(tmp_path / "LABELS.csv", rows)

    refused = cli("add", shifted, "--name", "shifted")
    accepted = cli("add", shifted, "--name", "shifted", "--accept-disagreement", "--json")

    assert refused.returncode == 1
    *warnings, error = refused.stderr.splitlines()
    assert error.startswith("error: nothing stored: production v1 agrees with only ")
    assert error.endswith(
        " of the labels, under half its accuracy (90.0%): check them, or pass --accept-disagreement"
    )
    assert 1 <= len(warnings) <= 11  # at most 10 suspects, then how many more
    assert all(line.startswith("warning: ") for line in warnings)
    assert accepted.returncode == 0, accepted.stderr
    check = json.loads(accepted.stdout)["label_check"]
    assert (check["model"], check["count"]) == ("production v1", COUNT)
    assert check["agreement"] < 0.45
    assert [span.name for span in SpanStore().spans()] == ["shifted"]
