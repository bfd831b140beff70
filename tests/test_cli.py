"""The core CLI, run the way a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from digitflow.cli import app
from digitflow.scans import write_scans

runner = CliRunner()
DIGITFLOW = str(Path(sys.executable).with_name("digitflow"))


def test_help_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from digitflow.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "assert result.exit_code == 0 and 'predict' in result.output, result.output\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_console_script_lists_core_commands():
    out = subprocess.run([DIGITFLOW, "--help"], capture_output=True, text=True, check=True)
    for command in ("data", "train", "evaluate", "predict", "report"):
        assert command in out.stdout


def test_predict_folder_of_scans_gives_right_digits(trained_model_path, mnist, tmp_path):
    scans = tmp_path / "scans"
    write_scans(mnist.x_test[:40], mnist.y_test[:40], scans, seed=3)
    (scans / "notes.txt").write_text("not an image, ignored in folders")

    result = runner.invoke(app, ["predict", str(scans), "--model", str(trained_model_path)])

    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 40
    labels = dict(line.split(",") for line in (scans / "labels.csv").read_text().splitlines()[1:])
    right = 0
    for line in lines:
        path, rest = line.rsplit(": ", 1)
        digit, confidence = rest.split(" (confidence ")
        assert 0.0 <= float(confidence.rstrip(")")) <= 1.0
        right += int(digit) == int(labels[Path(path).name])
    assert right >= 36, result.output


def test_predict_reports_a_bad_file_and_goes_on(trained_model_path, mnist, tmp_path):
    good = tmp_path / "seven.png"
    Image.fromarray(255 - mnist.x_test[0]).resize((120, 120)).save(good)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")

    result = runner.invoke(
        app, ["predict", str(bad), str(good), "--model", str(trained_model_path)]
    )

    assert result.exit_code == 1
    first, second = result.output.strip().splitlines()
    assert first.startswith(f"{bad}: error: ")
    assert second.startswith(f"{good}: 7 (confidence ")


def test_evaluate_json(trained_model_path):
    result = runner.invoke(app, ["evaluate", str(trained_model_path), "--json"])

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert 0.9 < report["accuracy"] <= 1.0 and report["loss"] > 0
    assert [d["digit"] for d in report["per_digit"]] == list(range(10))
    assert {"precision", "recall", "support"} <= set(report["per_digit"][3])


def test_train_then_report(tmp_path):
    model = tmp_path / "softmax.keras"
    trained = runner.invoke(
        app, ["train", "--arch", "softmax", "--epochs", "1", "--output", str(model)]
    )
    assert trained.exit_code == 0, trained.output
    assert "best validation accuracy" in trained.output

    png = tmp_path / "report.png"
    reported = runner.invoke(app, ["report", str(model), "--output", str(png)])

    assert reported.exit_code == 0, reported.output
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape[1] > image.shape[0] > 300
    assert (image[..., 0] > image[..., 1] + 100).any()  # red captions of wrong predictions


def test_missing_model_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nope.keras")])
    assert result.exit_code == 1
    assert "no model file" in result.output
