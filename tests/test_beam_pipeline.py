"""The bulk classification graph, `build_pipeline`, driven by Beam's TestPipeline on real files."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image, ImageDraw

from beam_jobs.classify import build_pipeline, model_label, resolve_model
from beam_jobs.inputs import Source
from beam_jobs.keras_handler import KerasModelHandler, sha256_file
from beam_jobs.transforms import NAMESPACE, PREDICTED
from digitflow.results import COLUMNS, error_line

STROKES = {  # dark pen strokes on white paper, roughly a 1, a 7 and a 4
    "one.png": [(32, 8), (32, 56)],
    "seven.png": [(14, 10), (50, 10), (26, 56)],
    "four.png": [(40, 56), (40, 8), (12, 40), (52, 40)],
}


def digit_folder(root: Path) -> dict[str, str]:
    """Pen-stroke PNGs, a blank and an empty image, and a text file; path -> expected error."""
    (root / "sub").mkdir(parents=True)
    for name, points in STROKES.items():
        page = Image.new("L", (64, 64), 245)
        ImageDraw.Draw(page).line(points, fill=20, width=6)
        page.save(root / "sub" / name if name == "four.png" else root / name)
    Image.new("L", (64, 64), 245).save(root / "blank.png")
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image: ignored")
    return {str(root / "blank.png"): "blank: no ink found", str(root / "empty.png"): "empty file"}


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_build_pipeline_classifies_a_folder_into_results_and_errors(model_file, tmp_path):
    root = tmp_path / "scans"
    failures = digit_folder(root)
    images = {str(root / "one.png"), str(root / "seven.png"), str(root / "sub" / "four.png")}
    model = resolve_model(str(model_file), None)  # a file outside the store
    version = model_label(model)
    handler = KerasModelHandler(model.uri, sha256=model.sha256, batch_size=2)
    output = tmp_path / "out" / "results.csv"

    def check_rows(lines: list[str]) -> None:
        rows = [dict(zip(COLUMNS, row, strict=True)) for row in csv.reader(lines)]
        assert sorted(row["path"] for row in rows) == sorted(images)
        assert {row["model_version"] for row in rows} == {version}
        for row in rows:
            probabilities = [float(row[f"prob_{digit}"]) for digit in range(10)]
            assert abs(sum(probabilities) - 1.0) < 1e-4
            assert float(row["confidence"]) == max(probabilities)
            assert row["digit"] == str(probabilities.index(max(probabilities)))

    p = BeamTestPipeline(runner="FnApiRunner")  # chosen explicitly: no test downloads Prism
    results, errors = build_pipeline(
        p, Source.parse(str(root)), str(output), handler, version, progress_s=0.0
    )
    assert_that(results, check_rows, label="results")
    expected_errors = [error_line(path, reason) for path, reason in failures.items()]
    assert_that(errors, equal_to(expected_errors), label="errors")
    result = p.run()
    result.wait_until_finish()

    assert version == f"sha256:{sha256_file(model_file)[:12]}"
    header, rows = read_csv(output)
    assert header == list(COLUMNS)
    assert sorted(row["path"] for row in rows) == sorted(images)
    error_header, error_rows = read_csv(tmp_path / "out" / "results.errors.csv")
    assert error_header == ["path", "error"]
    assert {row["path"]: row["error"] for row in error_rows} == failures
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    counters = {c.key.metric.name: c.committed for c in query["counters"]}
    low = sum(row["low_confidence"] == "true" for row in rows)
    assert counters.pop("low_confidence", 0) == low
    assert counters.pop("drift_low_confidence", 0) == low  # its threshold: min_confidence
    predicted = Counter(f"predicted_{row['digit']}" for row in rows)
    assert {name: counters.pop(name) for name in PREDICTED if name in counters} == predicted
    milli = sum(float(row["confidence"]) * 1000 for row in rows)
    assert abs(counters.pop("confidence_milli") - milli) <= len(rows)  # each rounded once
    assert counters == {
        "files_matched": 6,
        "files_ignored": 1,
        "images_classified": 3,
        "images_failed": 2,
    }
