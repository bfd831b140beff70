"""The bulk classification pipeline's pieces, each on Beam's TestPipeline with real files."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import fields

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from beam_jobs.inputs import Source
from beam_jobs.keras_handler import KerasModelHandler, ModelFileError, sha256_file
from beam_jobs.transforms import (
    NAMESPACE,
    ClassifyImages,
    FormatErrors,
    ListImageFiles,
    PreprocessImages,
    WriteCsv,
)
from digitflow.data import model_input
from digitflow.results import (
    COLUMNS,
    PROBABILITIES,
    RESULT_COLUMNS,
    Result,
    csv_line,
    errors_path,
    read_result,
    result_line,
)
from digitflow.scans import render_scan

AWKWARD_NAMES = ("a, b.png", 'say "seven".png', "two  spaces .png", "ünïcødé 数字.png")


def pipeline() -> BeamTestPipeline:
    """Beam's batch engine behind the DirectRunner, chosen explicitly so no test downloads Prism."""
    return BeamTestPipeline(runner="FnApiRunner")


def counters(result) -> dict[str, int]:
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    return {c.key.metric.name: c.committed for c in query["counters"]}


def scan_bytes(digit: np.ndarray, fmt: str = "PNG", seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    render_scan(digit, np.random.default_rng(seed)).save(buffer, fmt)
    return buffer.getvalue()


def image_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _name(path: bytes) -> str:
    return os.fsdecode(path).rsplit("/", 1)[-1]


def test_csv_lines_round_trip_awkward_paths():
    paths = [*AWKWARD_NAMES, "line\nbreak.png", "carriage\rreturn.png", "/already/plain.png"]
    lines = [csv_line((p, "x")) for p in paths]

    parsed = list(csv.reader(io.StringIO("\n".join(lines) + "\n")))

    assert parsed == [[p, "x"] for p in paths]
    assert csv_line(("/plain/path.png", 7)) == "/plain/path.png,7"


def test_prediction_line_columns_and_low_confidence():
    probabilities = np.array([0.02, 0.0, 0.0, 0.7, 0.0, 0.08, 0.0, 0.2, 0.0, 0.0], np.float32)

    row = next(csv.reader([result_line(Result.of("x.png", probabilities, "v3", 0.8))]))

    assert dict(zip(COLUMNS, row, strict=True)) == {
        "path": "x.png",
        "digit": "3",
        "confidence": "0.700000",
        "low_confidence": "true",
        "model_version": "v3",
        **{f"prob_{d}": f"{p:.6f}" for d, p in enumerate(probabilities)},
    }
    high = next(csv.reader([result_line(Result.of("x.png", probabilities, "v3", 0.5))]))
    assert high[3] == "false"


def test_errors_path_keeps_the_stem():
    assert errors_path("out/results.csv") == "out/results.errors.csv"
    assert errors_path("gs://bucket/run 1/r.CSV") == "gs://bucket/run 1/r.errors.csv"
    assert errors_path("out/results") == "out/results.errors.csv"


def test_listing_keeps_image_files_in_any_case_and_counts_the_others(tmp_path):
    root = tmp_path / "in"
    images = ["a.png", "B.JPG", "deep/er/c.WebP", "d.tiff", "e.jpeg", "f.bmp", "g.gif", "h.tif"]
    others = ["notes.txt", "labels.csv", "deep/README"]
    for name in images + others:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"anything")
    (root / "gone.png").symlink_to("nowhere.png")

    p = pipeline()
    listed, unreadable = p | ListImageFiles(Source.parse(str(root)))
    assert_that(listed, equal_to([os.fsencode(root / name) for name in images]), label="images")
    assert_that(
        unreadable,
        equal_to([(os.fsencode(root / "gone.png"), "unreadable: dangling symlink")]),
        label="unreadable",
    )
    result = p.run()
    result.wait_until_finish()

    # The dangling symlink is counted as failed where it is found (so on Flink too, where the
    # steps after the failures' flatten run once per producer: tests/test_flink.py).
    assert counters(result) == {"files_matched": 12, "files_ignored": 3, "images_failed": 1}


def test_preprocess_splits_images_from_failures_with_reasons(mnist, tmp_path):
    good = scan_bytes(mnist.x_test[0])
    jpeg = scan_bytes(mnist.x_test[1], "JPEG")
    files = {
        "good.png": good,
        "good.jpg": jpeg,
        "empty.png": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "text.png": b"not an image, just text",
        "bomb.png": image_bytes(Image.new("1", (8000, 8000))),
        "blank.png": image_bytes(Image.new("L", (120, 90), 250)),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    paths = [os.fsencode(tmp_path / name) for name in files]
    # A file system Beam does not know: an unexpected error, caught by the dead-letter output.
    paths.append(b"nosuchscheme://bucket/x.png")

    p = pipeline()
    images, failures = p | beam.Create(paths) | PreprocessImages()
    assert_that(
        images | "Shapes" >> beam.Map(lambda kv: (_name(kv[0]), kv[1].shape, kv[1].dtype)),
        equal_to([("good.png", (28, 28), np.float32), ("good.jpg", (28, 28), np.float32)]),
        label="images",
    )
    assert_that(
        failures | "Names" >> beam.Map(lambda kv: (_name(kv[0]), kv[1])),
        equal_to(
            [
                ("empty.png", "empty file"),
                ("truncated.jpg", "truncated: image data ends early"),
                ("text.png", "unreadable: not an image or unsupported format"),
                ("bomb.png", "too large: 8000x8000 pixels (limit 40,000,000)"),
                ("blank.png", "blank: no ink found"),
                ("x.png", "unreadable: unexpected ValueError"),
            ]
        ),
        label="failures",
    )
    p.run().wait_until_finish()


def test_classify_images_gives_rows_with_the_model_version(trained_model_path, mnist):
    digits = model_input(mnist.x_test[:20])
    labels = {f"/scans/{i}.png": int(label) for i, label in enumerate(mnist.y_test[:20])}
    paths = [os.fsencode(path) for path in labels]
    handler = KerasModelHandler(str(trained_model_path), sha256=sha256_file(trained_model_path))

    def check(lines: list[str]) -> None:
        rows = [dict(zip(COLUMNS, row, strict=True)) for row in csv.reader(lines)]
        assert sorted(row["path"] for row in rows) == sorted(labels)
        assert {row["model_version"] for row in rows} == {"v3"}
        for row in rows:
            probabilities = [float(row[f"prob_{d}"]) for d in range(10)]
            assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
            assert float(row["confidence"]) == max(probabilities)
        right = sum(int(row["digit"]) == labels[row["path"]] for row in rows)
        assert right >= 18, rows

    p = pipeline()
    keyed = p | beam.Create(list(zip(paths, digits, strict=True)))
    assert_that(keyed | ClassifyImages(handler, "v3", 0.8), check)
    result = p.run()
    result.wait_until_finish()

    assert counters(result)["images_classified"] == 20


def test_handler_refuses_a_model_file_that_changed(trained_model_path):
    handler = KerasModelHandler(str(trained_model_path), sha256="0" * 64)

    with pytest.raises(ModelFileError, match="changed since the job started"):
        handler.load_model()


@pytest.mark.parametrize("shards", [1, 3])
def test_write_csv_puts_the_header_on_every_file(tmp_path, shards):
    failures = [(os.fsencode(name), "blank: no ink found") for name in AWKWARD_NAMES * 5]
    target = tmp_path / "out" / "errors.csv"

    p = pipeline()
    lines = p | beam.Create(failures) | FormatErrors()
    _ = lines | WriteCsv(str(target), ("path", "error"), shards)
    p.run().wait_until_finish()

    written = sorted(target.parent.iterdir())
    if shards == 1:
        assert written == [target]
    else:
        assert [f.name for f in written] == [f"errors-0000{i}-of-00003.csv" for i in range(3)]
    rows = []
    for path in written:
        with path.open(newline="", encoding="utf-8") as handle:
            header, *body = list(csv.reader(handle))
        assert header == ["path", "error"]
        rows += body
    assert sorted(rows) == sorted([name, "blank: no ink found"] for name in AWKWARD_NAMES * 5)


def test_write_csv_of_nothing_is_a_header(tmp_path):
    target = tmp_path / "r.errors.csv"

    p = pipeline()
    _ = (
        p
        | beam.Create([]).with_output_types(tuple[bytes, str])
        | FormatErrors()
        | WriteCsv(str(target), ("path", "error"))
    )
    p.run().wait_until_finish()

    assert target.read_text() == "path,error\n"


def test_a_results_row_reads_back_as_the_result_it_was_written_from():
    probabilities = [0.0, 0.125, 0.0, 0.75, 0.0, 0.0625, 0.0, 0.0625, 0.0, 0.0]
    result = Result.of('a, "b".png', probabilities, "v3", 0.8)

    [record] = csv.DictReader([csv_line(COLUMNS), result_line(result)])

    assert (result.digit, result.confidence, result.low_confidence) == (3, 0.75, True)
    assert read_result(record) == result
    assert read_result({"path": "x.png", "digit": "42", "confidence": "nan"}) == Result(
        "x.png", None, None, False, "", (None,) * 10
    )


def test_each_single_column_is_named_as_the_result_field_it_holds():
    singles = [column.name for column in RESULT_COLUMNS if column not in PROBABILITIES]

    assert singles == [item.name for item in fields(Result) if item.name != "probabilities"]
    assert (*singles, *(f"prob_{digit}" for digit in range(10))) == COLUMNS
