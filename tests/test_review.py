"""`digitflow review`: a results CSV written as the Beam job writes it, over real scan files
(awkward names included, one since deleted) -> contact sheet, static page and labels.csv."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from test_beam_classify import heavy_modules_after
from typer.testing import CliRunner

from digitflow.listing import path_text
from digitflow.results import COLUMNS, Result, csv_line, result_line
from digitflow.scans import render_scan
from model_store.spans.contact_sheet import COLUMNS as SHEET_COLUMNS
from model_store.spans.contact_sheet import HEADER, TILE, TILES_PER_SHEET, load_scan
from model_store.spans.review import MAX_LIMIT
from model_store.spans.review_cli import register
from model_store.spans.review_rows import read_rows, select

DIGITFLOW = Path(sys.executable).with_name("digitflow")

# file name -> (index into MNIST test, confidence the "model" gave it)
SCANS = {
    b"a.png": (0, 0.99),
    b"b, with comma.png": (1, 0.42),
    b"caf\xe9.png": (2, 0.61),  # not UTF-8: written `caf\xe9.png` in the CSV
    b"d.jpg": (3, 0.95),
    b"e.png": (4, 0.55),
    b"f.png": (5, 0.79),
    b"gone.png": (6, 0.30),  # deleted after the run
}


def probabilities(digit: int, confidence: float) -> list[float]:
    rest = (1 - confidence) / 9
    return [confidence if d == digit else rest for d in range(10)]


@pytest.fixture
def results(mnist, tmp_path: Path) -> tuple[Path, dict[str, tuple[int, float]]]:
    """A results CSV over real scans: path text -> (predicted digit, confidence)."""
    folder = tmp_path / "scans"
    folder.mkdir()
    rng = np.random.default_rng(3)
    rows, expected = [csv_line(COLUMNS)], {}
    for name, (index, confidence) in SCANS.items():
        path = os.fsencode(folder) + b"/" + name
        fmt = "JPEG" if name.endswith(b".jpg") else "PNG"
        render_scan(mnist.x_test[index], rng).convert("RGB").save(os.fsdecode(path), fmt)
        digit = int(mnist.y_test[index])
        result = Result.of(path_text(path), probabilities(digit, confidence), "v1", 0.8)
        rows.append(result_line(result))
        expected[path_text(path)] = (digit, confidence)
    (folder / "gone.png").unlink()
    csv_path = tmp_path / "results.csv"
    csv_path.write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")
    return csv_path, expected


def review(*args: object):
    app = typer.Typer()
    app.callback()(lambda: None)  # a command group, as in `digitflow`
    register(app)
    return CliRunner().invoke(app, ["review", *map(str, args)])


def results_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """A results file whose rows have these (path, digit, confidence) cells, as they are."""
    others = ["true", "v1", *["0.100000"] * 10]
    lines = [csv_line(COLUMNS), *(csv_line([*row, *others]) for row in rows)]
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    return path


def read_labels(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_review_writes_sheet_page_and_labels_of_the_low_confidence_rows(results, tmp_path):
    csv_path, expected = results
    out = tmp_path / "review"

    done = review(csv_path, "--out", out)

    assert done.exit_code == 0, done.output
    low = sorted((c, p) for p, (_, c) in expected.items() if c < 0.8)
    assert [row[0] for row in low] == [0.30, 0.42, 0.55, 0.61, 0.79]
    assert read_labels(out / "labels.csv") == [
        ["path", "label", "predicted", "source"],
        *([path, str(expected[path][0]), str(expected[path][0]), "model:v1"] for _, path in low),
    ]
    assert sorted(os.listdir(out)) == ["contact-sheet-1.png", "index.html", "labels.csv"]
    with Image.open(out / "contact-sheet-1.png") as sheet:
        assert sheet.format == "PNG"
        assert sheet.size == (SHEET_COLUMNS * TILE[0], HEADER + TILE[1])  # 5 tiles: one line
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.count("<img ") == 1 and 'src="contact-sheet-1.png"' in page
    assert page.count("<li>") == 5
    assert "http" not in page and "<link" not in page and "<script" not in page
    assert "caf\\xe9.png" in page and "b, with comma.png" in page
    assert "wrote 5 of 5 rows below confidence 0.8" in done.output
    assert "1 scans could not be read" in done.output
    assert f"digitflow data add {out / 'labels.csv'}" in done.output


def test_limit_all_and_tile_grid(results, tmp_path):
    csv_path, expected = results

    done = review(csv_path, "--out", tmp_path / "all", "--all", "--limit", "7")

    assert done.exit_code == 0, done.output
    labels = read_labels(tmp_path / "all" / "labels.csv")[1:]
    assert [expected[path][1] for path, *_ in labels] == sorted(c for _, c in expected.values())
    with Image.open(tmp_path / "all" / "contact-sheet-1.png") as sheet:
        assert sheet.size == (SHEET_COLUMNS * TILE[0], HEADER + 2 * TILE[1])  # 7 tiles: 2 lines


def test_select_keeps_the_lowest_in_order_and_counts_all_matches():
    confidences = [0.5, 0.2, 0.9, 0.2, 0.7, 0.1]
    rows = [Result(f"{n}.png", n % 10, c, c < 0.8, "v1", ()) for n, c in enumerate(confidences)]

    selection = select(iter(rows), below=0.8, limit=3)

    assert [row.path for row in selection.rows] == ["5.png", "1.png", "3.png"]
    assert selection.matching == 5


def test_an_existing_folder_with_files_is_refused(results, tmp_path):
    csv_path, _ = results
    out = tmp_path / "mine"
    out.mkdir()
    (out / "labels.csv").write_text("my own work\n")

    done = review(csv_path, "--out", out)

    assert done.exit_code == 1
    assert done.output.strip() == f"error: {out} is not empty: give a new or empty folder"
    assert sorted(p.name for p in out.iterdir()) == ["labels.csv"]
    assert (out / "labels.csv").read_text() == "my own work\n"


def test_a_file_that_is_not_a_results_csv_is_refused(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\na.png,3\n")

    done = review(labels, "--out", tmp_path / "out")

    assert done.exit_code == 1
    assert "is not a results file: no column path, digit, confidence" in done.output
    assert not (tmp_path / "out").exists()


def test_review_command_imports_neither_tensorflow_nor_beam_nor_prefect():
    loaded = "import model_store.spans.review_cli, model_store.spans.review"
    assert heavy_modules_after(loaded) == "[]"


def test_a_scan_over_the_size_limit_gets_its_tile_unread(results, tmp_path):
    _, expected = results
    huge = tmp_path / "scans" / "huge.png"
    with huge.open("wb") as handle:
        handle.truncate(2 << 20)  # sparse: 2 MiB on paper, nothing on disk
    rows = [(str(huge), "4", "0.05"), *((p, str(d), str(c)) for p, (d, c) in expected.items())]
    both = results_csv(tmp_path / "with-huge.csv", rows)

    done = review(both, "--out", tmp_path / "out", "--max-file-mib", "1")

    assert done.exit_code == 0, done.output
    assert "2 scans could not be read" in done.output  # the deleted one and the huge one
    assert read_labels(tmp_path / "out" / "labels.csv")[1][:2] == [str(huge), "4"]
    assert load_scan(str(huge), max_file_mib=1) == "too large: 2.0 MiB (limit 1 MiB)"


@pytest.mark.parametrize("case", ["dangling symlink", "/proc", "in the scans", "linked scans"])
def test_an_out_folder_that_cannot_be_used_is_refused_in_one_line(case, results, tmp_path):
    csv_path, _ = results
    scans = tmp_path / "scans"
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "linked").symlink_to(scans, target_is_directory=True)
    out, message = {
        "dangling symlink": (
            tmp_path / "dangling",
            f"{tmp_path / 'dangling'} is a dangling symlink: give a new or empty folder",
        ),
        "/proc": (Path("/proc/review"), "cannot write into /proc/review: "),
        "in the scans": (scans / "review", f"{scans / 'review'} is inside {scans}, "),
        "linked scans": (tmp_path / "linked" / "review", f"is inside {scans}, "),
    }[case]
    before = sorted(os.listdir(scans))

    done = review(csv_path, "--out", out)

    assert done.exit_code == 1
    [line] = done.output.strip().splitlines()
    assert line.startswith("error: ") and message in line, line
    assert sorted(os.listdir(scans)) == before and not (tmp_path / "nowhere").exists()


def test_limit_has_a_hard_maximum(results, tmp_path):
    csv_path, _ = results

    done = review(csv_path, "--out", tmp_path / "out", "--limit", MAX_LIMIT + 1)

    assert done.exit_code == 1
    assert done.output.strip() == f"error: --limit {MAX_LIMIT + 1}: a review takes 1 to 1,000 rows"
    assert not (tmp_path / "out").exists()


def test_sheets_are_pages_of_bounded_size_all_on_the_index(results, tmp_path):
    _, expected = results
    scans = list(expected.items())
    count = TILES_PER_SHEET + 10
    picked = [scans[n % len(scans)] for n in range(count)]
    rows = [(path, str(digit), f"{n / count:.6f}") for n, (path, (digit, _)) in enumerate(picked)]
    many = results_csv(tmp_path / "many.csv", rows)
    out = tmp_path / "out"

    done = review(many, "--out", out, "--all", "--limit", count)

    assert done.exit_code == 0, done.output
    assert sorted(os.listdir(out)) == [
        "contact-sheet-1.png",
        "contact-sheet-2.png",
        "index.html",
        "labels.csv",
    ]
    lines = -(-TILES_PER_SHEET // SHEET_COLUMNS)
    for name, height in (("contact-sheet-1.png", lines), ("contact-sheet-2.png", 2)):
        with Image.open(out / name) as sheet:
            assert sheet.size == (SHEET_COLUMNS * TILE[0], HEADER + height * TILE[1])
    page = (out / "index.html").read_text(encoding="utf-8")
    assert 'src="contact-sheet-1.png"' in page and 'src="contact-sheet-2.png"' in page
    assert f'<ol start="{TILES_PER_SHEET + 1}">' in page and page.count("<li>") == count
    assert len(read_labels(out / "labels.csv")) == count + 1


def test_rows_with_a_bad_digit_or_confidence_come_first_unlabelled(results, tmp_path):
    _, expected = results
    a, b, c, d, e = list(expected)[:5]
    odd = results_csv(
        tmp_path / "odd.csv",
        [
            (a, "3", "0.500000"),
            (b, "42", "0.600000"),
            (c, "7", "nan"),
            (d, "\u0663", "0.100000"),  # an Arabic-Indic three: not a digit 0-9
            (e, "1", "0.200000"),
        ],
    )
    out = tmp_path / "out"

    done = review(odd, "--out", out, "--all")

    assert done.exit_code == 0, done.output
    labels = [row[:3] for row in read_labels(out / "labels.csv")[1:]]
    assert labels == [[b, "", ""], [c, "", ""], [d, "", ""], [e, "1", "1"], [a, "3", "3"]]
    assert "3 rows left unlabelled (no valid digit and confidence)" in done.output


def test_relative_paths_are_read_from_the_csv_folder_in_review_and_data_add(mnist, tmp_path):
    scans = {f"scan_{i}.png": int(mnist.y_test[i]) for i in range(4)}
    (tmp_path / "scans").mkdir()
    for i, name in enumerate(scans):
        render_scan(mnist.x_test[i], np.random.default_rng(i)).save(tmp_path / "scans" / name)
    rows = [(f"../scans/{name}", str(label), "0.5") for name, label in scans.items()]
    (tmp_path / "run").mkdir()
    results_csv(tmp_path / "run" / "results.csv", rows)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    done = run_in(elsewhere, "review", "../run/results.csv", "--out", "../review", "--all")

    assert done.returncode == 0, done.stderr
    assert "could not be read" not in done.stdout
    labels = read_labels(tmp_path / "review" / "labels.csv")
    assert [row[:2] for row in labels[1:]] == [
        [str(tmp_path / "scans" / name), str(label)] for name, label in scans.items()
    ]
    person = ["path,label", *(f"{path},{label}" for path, label, *_ in labels[1:])]
    (tmp_path / "review" / "labels.csv").write_text("\n".join(person) + "\n")
    added = run_in(tmp_path, "data", "add", "review/labels.csv", "--json")
    assert (added.returncode, added.stderr) == (0, "")
    assert json.loads(added.stdout)["count"] == len(scans)


def run_in(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`digitflow ARGS` run from `folder`."""
    return subprocess.run(
        [str(DIGITFLOW), *args], cwd=folder, capture_output=True, text=True, timeout=120
    )


def test_review_reads_each_row_as_the_result_the_job_wrote(results):
    csv_path, expected = results

    rows = list(read_rows([str(csv_path)]))

    assert {row.path: (row.digit, row.confidence) for row in rows} == expected
    assert all(row.low_confidence == (row.confidence < 0.8) for row in rows)
    assert {(row.model_version, len(row.probabilities)) for row in rows} == {("v1", 10)}
