"""Bulk classification end to end on the DirectRunner: real scans and bad files in, CSV out."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

from beam_jobs.classify import TuningOptions, model_label, resolve_model, run
from beam_jobs.direct import MULTI_PROCESS_FROM, direct_defaults
from beam_jobs.keras_handler import KerasModelHandler
from beam_jobs.options import ClassifyOptions, Tuning
from digitflow.options import add_arguments, from_namespace
from digitflow.results import COLUMNS
from digitflow.scans import render_scan, write_scans
from model_store import ModelStore

DIGITFLOW = str(Path(sys.executable).with_name("digitflow"))
IN_PROCESS = "--direct_running_mode=in_memory"
CORES = f"--direct_num_workers={os.cpu_count()}"
AWKWARD_NAMES = ("a, b.PNG", 'say "hi".png', "two  spaces .Jpeg", "ünïcødé 数字.webp")
BAD_FILES = {
    "empty.png": "empty file",
    "truncated.jpg": "truncated: image data ends early",
    "not-an-image.png": "unreadable: not an image or unsupported format",
    "bomb.png": "too large: 8000x8000 pixels (limit 40,000,000)",
    "blank.png": "blank: no ink found",
}


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, fmt)
    return buffer.getvalue()


def scan_folder(root: Path, mnist) -> tuple[dict[str, int], dict[str, str], int]:
    """Scans in mixed formats, nested, with awkward names; bad files; other files.

    Returns (path -> label for every scan, path -> error for every bad file, other files).
    Paths are as the CSV files write them.
    """
    digits, labels = mnist.x_test, mnist.y_test
    nested = root / "nested" / "deeper"
    write_scans(digits[:18], labels[:18], root, seed=5)
    write_scans(digits[18:24], labels[18:24], nested, seed=6)
    scans = {str(root / f"scan_{i:05d}.{ext}"): i for i, ext in enumerate(_formats(18))}
    scans |= {str(nested / f"scan_{i:05d}.{ext}"): 18 + i for i, ext in enumerate(_formats(6))}
    rng = np.random.default_rng(7)
    for offset, name in enumerate(AWKWARD_NAMES):
        fmt = {"PNG": "PNG", "png": "PNG", "Jpeg": "JPEG", "webp": "WEBP"}[name.rsplit(".", 1)[1]]
        (root / name).write_bytes(encoded(render_scan(digits[24 + offset], rng), fmt))
        scans[str(root / name)] = 24 + offset
    jpeg = encoded(render_scan(digits[28], rng), "JPEG")
    bad = {
        "empty.png": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "not-an-image.png": b"PK\x03\x04 a zip, not a picture",
        "bomb.png": encoded(Image.new("1", (8000, 8000)), "PNG"),
        "blank.png": encoded(Image.new("L", (200, 150), 240), "PNG"),
    }
    for name, data in bad.items():
        (nested / name).write_bytes(data)
    (root / "notes.txt").write_text("not an image: ignored")
    truth = {path: int(labels[index]) for path, index in scans.items()}
    return truth, {str(nested / name): BAD_FILES[name] for name in bad}, 3  # + 2 labels.csv


def _formats(count: int) -> list[str]:
    return [("png", "jpg", "bmp", "tiff", "webp", "gif")[i % 6] for i in range(count)]


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture
def production(trained_model_path: Path) -> ModelStore:
    """The default store with the trained model as v1, in production."""
    store = ModelStore()
    store.register(trained_model_path, {"metrics": {"accuracy": 0.97}})
    store.promote(1, reason="test", actor="test")
    return store


def test_every_file_is_accounted_for_once(production, mnist, tmp_path):
    root = tmp_path / "scans [batch 1]"  # glob characters in the folder name are literal
    truth, failures, others = scan_folder(root, mnist)
    output = tmp_path / "out" / "results.csv"

    summary = run(ClassifyOptions(str(root), str(output)), [IN_PROCESS])

    header, rows = read_csv(output)
    error_header, errors = read_csv(tmp_path / "out" / "results.errors.csv")
    assert header == list(COLUMNS)
    assert error_header == ["path", "error"]
    classified = [row["path"] for row in rows]
    assert sorted(classified) == sorted(truth)  # each once, with the path as matched
    assert {row["path"]: row["error"] for row in errors} == failures
    assert {row["model_version"] for row in rows} == {"v1"}
    right = sum(int(row["digit"]) == truth[row["path"]] for row in rows)
    assert right >= 0.9 * len(truth), rows
    for row in rows:
        confidence = float(row["confidence"])
        assert row["low_confidence"] == ("true" if confidence < 0.8 else "false")
    assert (summary.matched, summary.classified, summary.failed, summary.ignored) == (
        len(truth) + len(failures) + others,
        len(truth),
        len(failures),
        others,
    )
    assert summary.low_confidence == sum(row["low_confidence"] == "true" for row in rows)
    assert summary.model_version == "v1"


def test_model_is_pinned_at_launch(production, trained_model_path, tmp_path):
    import keras

    launched = resolve_model("production", None)
    other = tmp_path / "other.keras"
    keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    ).save(other)
    production.register(other, {"metrics": {}})
    production.promote(2, reason="a new model mid-run", actor="test")

    handler = KerasModelHandler(launched.uri, sha256=launched.sha256)

    assert model_label(launched) == "v1"
    assert launched.uri == production.get(1).model_uri
    images = np.random.default_rng(0).random((8, 28, 28), np.float32)
    expected = keras.saving.load_model(trained_model_path).predict_on_batch(images)
    np.testing.assert_allclose(handler.load_model().predict(images), expected, atol=1e-5)


def classify(*args: object) -> subprocess.CompletedProcess[str]:
    """`digitflow classify ARGS...`, the installed console script."""
    return subprocess.run(
        [DIGITFLOW, "classify", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_cli_runs_worker_processes_and_writes_shards(production, mnist, tmp_path):
    write_scans(mnist.x_test[:30], mnist.y_test[:30], tmp_path / "scans", seed=1)
    output = tmp_path / "results.csv"

    done = classify(
        tmp_path / "scans",
        "-o",
        output,
        "--shards",
        "2",
        "--direct_running_mode",
        "multi_processing",
    )

    assert done.returncode == 0, done.stderr
    assert "matched 31 files: 30 images, 1 ignored" in done.stdout
    assert "model v1" in done.stdout
    shards = sorted(tmp_path.glob("results-*-of-00002.csv"))
    assert len(shards) == 2
    paths = [row["path"] for shard in shards for row in read_csv(shard)[1]]
    assert sorted(paths) == sorted(str(p) for p in (tmp_path / "scans").glob("scan_*"))
    assert read_csv(tmp_path / "results.errors.csv") == (["path", "error"], [])


@pytest.mark.parametrize(
    ("given", "files", "added"),
    [
        ([], 20, ["--direct_running_mode=in_memory"]),
        ([], MULTI_PROCESS_FROM, ["--direct_running_mode=multi_processing", CORES]),
        (["--direct_running_mode", "multi_processing"], 20, [CORES]),
        (["--direct_running_mode=multi_threading", "--direct_num_workers=4"], 20, []),
        (["--direct_running_mode=in_memory"], MULTI_PROCESS_FROM, []),
    ],
)
def test_direct_runner_defaults_follow_the_job_size(given, files, added):
    assert direct_defaults(PipelineOptions(given), given, files) == added


def test_cli_cannot_start_without_input_files_or_model(production, tmp_path):
    nothing = classify(tmp_path / "nowhere", "--output", tmp_path / "r.csv")
    no_alias = classify(tmp_path, "--output", tmp_path / "r.csv", "--model", "staging")

    assert nothing.returncode == 1
    assert f"no files match {tmp_path / 'nowhere'}" in nothing.stderr
    assert no_alias.returncode == 1
    assert "unknown alias 'staging'" in no_alias.stderr


def test_cli_exits_1_when_the_job_fails(mnist, tmp_path):
    write_scans(mnist.x_test[:2], mnist.y_test[:2], tmp_path / "scans")
    broken = tmp_path / "broken.keras"  # a .keras archive Keras cannot build a model from
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "NoSuchModel", "config": {}}))

    done = classify(tmp_path / "scans", "-o", tmp_path / "r.csv", "--model", broken, IN_PROCESS)

    assert done.returncode == 1
    assert "the classification job failed" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.keras", "digitflow-home", "scans"]


def heavy_modules_after(statement: str) -> str:
    """Which of Beam, TensorFlow, Keras and Prefect a fresh interpreter has after `statement`."""
    code = (
        f"import sys; {statement}\n"
        "print(sorted(m for m in ('apache_beam', 'tensorflow', 'keras', 'prefect') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_cli_module_imports_neither_beam_nor_tensorflow():
    assert heavy_modules_after("import flows.classify_cli") == "[]"


def test_a_command_line_parses_into_the_typed_options_and_beam_keeps_the_tuning():
    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_arguments(parser, ClassifyOptions)
    argv = ["--input", "in/", "--output", "r.csv", "--min-confidence", "0.5", "--overwrite"]

    known, beam_args = parser.parse_known_args([*argv, "--batch_size", "7", IN_PROCESS])
    tuning = from_namespace(Tuning, PipelineOptions(beam_args).view_as(TuningOptions))

    assert from_namespace(ClassifyOptions, known) == ClassifyOptions(
        "in/", "r.csv", min_confidence=0.5, overwrite=True
    )
    assert beam_args == ["--batch_size", "7", IN_PROCESS]
    assert tuning == Tuning(batch_size=7)
