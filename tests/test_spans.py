"""Labelled spans (`model_store.spans`, `digitflow data add | list | remove`): real scans and
a real LABELS.csv in, pooled MNIST-style arrays out, on a local disk and on S3 and GCS."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_models_cli import command_importing
from test_review import probabilities

from digitflow import locations
from digitflow.listing import UnreadableError, path_text
from digitflow.preprocess import to_mnist
from digitflow.results import COLUMNS, Result, csv_line, result_line
from digitflow.scans import render_scan, write_scans
from model_store import ModelStore, SpanStore, StoreError, split_of

DIGITFLOW = Path(sys.executable).with_name("digitflow")
FORMATS = ("png", "jpg", "bmp", "tiff", "webp", "gif")  # write_scans cycles through these


def scan_bytes(digit: np.ndarray, seed: int) -> bytes:
    buffer = io.BytesIO()
    render_scan(digit, np.random.default_rng(seed)).save(buffer, "PNG")
    return buffer.getvalue()


def scans(mnist, folder: Path, start: int, count: int) -> list[tuple[str, int]]:
    """`count` realistic scans of MNIST test digits in mixed formats: (file name, label)."""
    write_scans(mnist.x_test[start : start + count], mnist.y_test[start : start + count], folder)
    labels = mnist.y_test[start : start + count].tolist()
    return [(f"scan_{i:05d}.{FORMATS[i % 6]}", label) for i, label in enumerate(labels)]


def labels_csv(path: Path, rows: list[tuple[str, object]]) -> Path:
    lines = ["path,label", *(f"{where},{label}" for where, label in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_splits(store: SpanStore, name: str) -> dict[str, bool]:
    """Content sha256 -> holdout flag, as the span's images.npz holds them."""
    with np.load(Path(store.root) / "datasets" / name / "images.npz") as arrays:
        return dict(zip(arrays["sha256"].tolist(), arrays["holdout"].tolist(), strict=True))


def test_split_is_a_stable_fifth_by_content_hash() -> None:
    hashes = [sha256(str(i).encode()) for i in range(5000)]
    holdout = [split_of(h) for h in hashes].count("holdout") / len(hashes)
    assert 0.18 < holdout < 0.22
    assert [split_of(h) for h in hashes] == [split_of(h) for h in hashes]


def test_add_stores_the_good_rows_and_names_the_bad_ones(tmp_path: Path, mnist) -> None:
    folder = tmp_path / "scans"
    good = [(f"scans/{name}", label) for name, label in scans(mnist, folder, 0, 10)]
    odd_name = os.fsencode(folder) + b"/caf\xe9 scan.png"  # not UTF-8: as `review` writes it
    Path(os.fsdecode(odd_name)).write_bytes(scan_bytes(mnist.x_test[10], 1))
    good.append((path_text(odd_name), int(mnist.y_test[10])))
    (folder / "extra.png").write_bytes(scan_bytes(mnist.x_test[11], 2))
    jpeg = (folder / "scan_00001.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    bad = [
        ("scans/broken.jpg", 3),
        ("scans/missing.png", 4),
        ("./scans/../scans/scan_00000.png", 7),
        ("scans/extra.png", 11),
    ]
    source = labels_csv(tmp_path / "LABELS.csv", [*good, *bad])
    store = SpanStore(tmp_path / "store")

    result = store.add(source, name="people")

    assert result.problems == [
        "row 12 (scans/broken.jpg): truncated: image data ends early",
        "row 13 (scans/missing.png): unreadable: no such file or directory",
        "row 14 (./scans/../scans/scan_00000.png): duplicate: same path as row 1",
        "row 15 (scans/extra.png): bad label '11': must be a digit 0-9",
    ]
    span = result.span
    files = [tmp_path / "scans" / name.removeprefix("scans/") for name, _ in good[:-1]]
    contents = [path.read_bytes() for path in files] + [Path(os.fsdecode(odd_name)).read_bytes()]
    labels = [label for _, label in good]
    assert (span.name, span.count, span.retired_at) == ("people", 11, None)
    assert span.per_digit == {str(d): labels.count(d) for d in range(10)}
    holdout = [sha256(data) for data in contents if split_of(sha256(data)) == "holdout"]
    assert holdout, "the sample should have holdout images"
    assert span.splits == {"train": 11 - len(holdout), "holdout": len(holdout)}
    assert span.source_sha256 == sha256(source.read_bytes())
    stored = tmp_path / "store" / "datasets" / "people"
    assert sha256((stored / "images.npz").read_bytes()) == span.data_sha256
    assert json.loads((stored / "span.json").read_text())["data_sha256"] == span.data_sha256

    images = store.active_images()

    assert (images.spans, images.empty) == (("people",), False)
    assert images.checksum == sha256(span.data_sha256.encode())
    assert images.holdout_ids == holdout
    assert images.x_train.shape == (11 - len(holdout), 28, 28)
    assert images.x_train.dtype == images.y_train.dtype == np.uint8
    train = [i for i, data in enumerate(contents) if sha256(data) not in holdout]
    assert images.y_train.tolist() == [labels[i] for i in train]
    first = np.round(to_mnist(contents[train[0]]) * 255).astype(np.uint8)
    assert np.array_equal(images.x_train[0], first)  # white ink 255 on black 0, as MNIST
    assert store.spans() == [span]


def test_spans_keep_splits_pool_once_and_retire_without_erasing(tmp_path: Path, mnist) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first_rows = scans(mnist, first, 0, 8)
    shutil.copytree(first, second)  # the same files again, under other paths
    second_rows = first_rows[:6] + [(f"new_{i}.png", int(mnist.y_test[20 + i])) for i in range(4)]
    for i in range(4):
        (second / f"new_{i}.png").write_bytes(scan_bytes(mnist.x_test[20 + i], 10 + i))
    store = SpanStore(tmp_path / "store")
    assert store.active_images().empty and store.active_images().checksum == ""

    one = store.add(labels_csv(first / "LABELS.csv", first_rows), name="one").span
    two = store.add(labels_csv(second / "LABELS.csv", second_rows), name="two").span

    splits_one, splits_two = stored_splits(store, "one"), stored_splits(store, "two")
    shared = splits_one.keys() & splits_two.keys()
    assert len(shared) == 6 and all(splits_one[h] == splits_two[h] for h in shared)
    pooled = store.active_images()
    assert pooled.spans == ("one", "two")
    assert len(pooled.y_train) + len(pooled.y_holdout) == 12  # 8 + 4 new, each once
    assert set(pooled.holdout_ids) == {h for h, held in (splits_one | splits_two).items() if held}

    retired = store.remove("one", reason="labels were wrong", actor="test")

    assert (retired.retired_reason, retired.retired_by) == ("labels were wrong", "test")
    assert store.active_images().spans == ("two",)
    assert len(store.active_images().y_train) + len(store.active_images().y_holdout) == 10
    assert store.spans() == [two]
    assert store.spans(include_retired=True) == [retired, two]
    assert (tmp_path / "store" / "datasets" / "one" / "images.npz").is_file()
    assert retired.data_sha256 == one.data_sha256
    with pytest.raises(StoreError, match=r"^span one was already removed at "):
        store.remove("one", reason="again", actor="test")
    with pytest.raises(StoreError, match=r"^span two exists$"):
        store.add(second / "LABELS.csv", name="two")
    npz = tmp_path / "store" / "datasets" / "two" / "images.npz"
    damaged = bytearray(npz.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    npz.write_bytes(damaged)
    with pytest.raises(StoreError, match=r"^span two is corrupt: images\.npz does not match"):
        store.active_images()


def test_span_on_an_object_store(bucket: str, tmp_path: Path, mnist) -> None:
    rows = [(name, label) for name, label in scans(mnist, tmp_path, 0, 3)]
    for i in range(2):
        uri = f"{bucket}/incoming/scan {i}.png"
        locations.put(uri, scan_bytes(mnist.x_test[3 + i], i))
        rows.append((uri, int(mnist.y_test[3 + i])))
    rows.append((f"{bucket}/incoming/missing.png", 1))
    store = SpanStore(f"{bucket}/models")

    result = store.add(labels_csv(tmp_path / "LABELS.csv", rows), name="remote")

    assert result.problems == [f"row 6 ({bucket}/incoming/missing.png): unreadable: no such object"]
    assert result.span.count == 5
    assert [span.name for span in SpanStore(f"{bucket}/models").spans()] == ["remote"]
    images = store.active_images()
    assert images.spans == ("remote",)
    assert sorted([*images.y_train, *images.y_holdout]) == sorted(label for _, label in rows[:5])


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DIGITFLOW), "data", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_cli_adds_lists_and_removes(tmp_path: Path, mnist) -> None:
    rows = [*scans(mnist, tmp_path, 0, 4), ("gone.png", 5)]
    source = labels_csv(tmp_path / "LABELS.csv", rows)
    nothing = labels_csv(tmp_path / "nothing.csv", [("gone.png", 5)])

    added = cli("add", source, "--name", "people", "--json")
    failed = cli("add", nothing)
    removed = cli("remove", "people", "--reason", "wrong labels")
    listed, imported = command_importing("data", "list", "--json", "--all")

    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["count"] == 4
    assert added.stderr.splitlines() == [
        "warning: row 5 (gone.png): unreadable: no such file or directory"
    ]
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1] == (
        f"error: nothing stored: none of the 1 rows of {nothing} could be used"
    )
    assert removed.returncode == 0, removed.stderr
    [span] = json.loads(listed)
    assert (span["name"], span["retired_reason"]) == ("people", "wrong labels")
    assert imported == []


def test_labels_must_be_exactly_one_ascii_digit(tmp_path: Path, mnist) -> None:
    files = scans(mnist, tmp_path, 0, 5)
    labels = ["0_7", "\u0663", "\uff11", "+1", " 7 "]  # 0_7, Arabic-Indic 3, full-width 1, +1, 7
    rows = [(name, label) for (name, _), label in zip(files, labels, strict=True)]

    result = SpanStore(tmp_path / "store").add(labels_csv(tmp_path / "LABELS.csv", rows))

    assert result.problems == [
        f"row {n} ({files[n - 1][0]}): bad label {labels[n - 1]!r}: must be a digit 0-9"
        for n in range(1, 5)
    ]
    assert (result.span.count, result.span.per_digit["7"]) == (1, 1)


def test_a_file_over_the_size_limit_is_a_bad_row_unread(tmp_path: Path, mnist) -> None:
    rows = scans(mnist, tmp_path, 0, 2)
    with (tmp_path / "huge.png").open("wb") as handle:
        handle.truncate(2 << 20)  # sparse: 2 MiB on paper, nothing on disk
    source = labels_csv(tmp_path / "LABELS.csv", [*rows, ("huge.png", 4)])

    added = cli("add", source, "--max-file-mib", "1", "--json")

    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["count"] == 2
    warning = "warning: row 3 (huge.png): too large: 2.0 MiB (limit 1 MiB)"
    assert added.stderr.splitlines() == [warning]


def test_an_object_over_the_size_limit_is_refused_by_its_size(bucket: str) -> None:
    uri = f"{bucket}/incoming/huge.png"
    locations.put(uri, bytes(2 << 20))

    with pytest.raises(UnreadableError, match=r"^too large: 2\.0 MiB \(limit 1 MiB\)$"):
        locations.read(uri, max_mib=1)
    assert locations.read(uri, max_mib=2) == bytes(2 << 20)


def test_a_fifo_as_labels_csv_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "LABELS.csv"
    os.mkfifo(fifo)  # opened for reading, it would wait for a writer forever

    done = subprocess.run(
        [str(DIGITFLOW), "data", "add", str(fifo)], capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"error: {fifo}: unreadable: not a regular file (FIFO)"]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def reviewed_run(mnist, tmp_path: Path, count: int, wrong: int) -> tuple[Path, dict[str, int]]:
    """`digitflow review --all` of a bulk run over `count` real scans whose first `wrong`
    predictions are wrong: its labels.csv, and each scan's true label by path."""
    folder = tmp_path / "scans"
    truth = {str(folder / name): label for name, label in scans(mnist, folder, 0, count)}
    lines = [csv_line(COLUMNS)]
    for n, (path, label) in enumerate(truth.items()):
        digit = (label + 1) % 10 if n < wrong else label
        lines.append(result_line(Result.of(path, probabilities(digit, 0.5), "v1", 0.8)))
    results = tmp_path / "results.csv"
    results.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    out = tmp_path / "review"
    done = subprocess.run(
        [str(DIGITFLOW), "review", str(results), "--out", str(out), "--all"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return out / "labels.csv", truth


def test_an_unedited_review_is_refused_and_unreviewed_labels_never_judge(tmp_path, mnist):
    labels, truth = reviewed_run(mnist, tmp_path, 40, wrong=2)
    rows = read_rows(labels)
    assert {row["source"] for row in rows} == {"model:v1"}

    unedited = cli("add", labels)

    assert unedited.returncode == 1
    assert unedited.stderr.splitlines() == [
        f"error: {labels}: 40 of 40 rows are a model's unconfirmed guesses (source model:..., "
        "label = predicted): check each and set its source to person, or pass "
        "--accept-unreviewed to store them for training only"
    ]
    assert SpanStore().spans() == []

    for row in rows[:2]:  # the wrong predictions, corrected: an edited label is reviewed
        row["label"] = str(truth[row["path"]])
    for row in rows[2:10]:  # checked and right
        row["source"] = "person"
    write_rows(labels, rows)
    partly = cli("add", labels, "--name", "desk")
    added = cli("add", labels, "--name", "desk", "--accept-unreviewed", "--json")

    assert partly.returncode == 1
    assert "30 of 40 rows are a model's unconfirmed guesses" in partly.stderr
    assert added.returncode == 0, added.stderr
    assert (json.loads(added.stdout)["unreviewed"], added.stderr) == (30, "")
    sha = {row["path"]: sha256(Path(row["path"]).read_bytes()) for row in rows}
    guessed = {sha[row["path"]] for row in rows[10:]}
    assert any(split_of(h) == "holdout" for h in guessed), "some guesses should split to holdout"
    images = SpanStore().active_images()
    reviewed = {sha[row["path"]] for row in rows[:10]}
    assert set(images.holdout_ids) == {h for h in reviewed if split_of(h) == "holdout"}
    assert len(images.y_train) == 40 - len(images.holdout_ids)  # the guesses train
    pooled = sorted([*images.y_train.tolist(), *images.y_holdout.tolist()])
    assert pooled == sorted(truth.values())


def test_a_span_from_before_provenance_loads_as_reviewed(tmp_path, mnist):
    store = SpanStore(tmp_path / "store")
    span = store.add(labels_csv(tmp_path / "LABELS.csv", scans(mnist, tmp_path, 0, 10))).span
    before = store.active_images()
    folder = tmp_path / "store" / "datasets" / span.name
    with np.load(folder / "images.npz") as arrays:
        old = {key: arrays[key] for key in ("x", "y", "sha256", "holdout")}
    np.savez_compressed(folder / "images.npz", **old)
    record = json.loads((folder / "span.json").read_text())
    del record["unreviewed"]
    record["data_sha256"] = sha256((folder / "images.npz").read_bytes())
    (folder / "span.json").write_text(json.dumps(record))

    after = store.active_images()

    assert [s.unreviewed for s in store.spans()] == [0]
    assert after.holdout_ids == before.holdout_ids and after.holdout_ids
    assert np.array_equal(after.y_train, before.y_train)


def test_an_image_labelled_differently_in_two_spans_warns_and_the_newest_wins(tmp_path, mnist):
    rows = scans(mnist, tmp_path, 0, 6)
    name, label = rows[0]
    corrected = [(name, (label + 1) % 10), *rows[1:]]
    image = f"image {sha256((tmp_path / name).read_bytes())[:12]}"
    rule = f"is labelled {label} in span a-old and {(label + 1) % 10} in span b-new"

    old = cli("add", labels_csv(tmp_path / "old.csv", rows), "--name", "a-old")
    new = cli("add", labels_csv(tmp_path / "new.csv", corrected), "--name", "b-new")

    assert (old.returncode, old.stderr) == (0, "")
    assert new.returncode == 0, new.stderr
    assert new.stderr.splitlines() == [
        f"warning: row 1 ({name}) {rule}: b-new's label is used (newest span)"
    ]
    images = SpanStore().active_images()
    assert images.warnings == (f"{image} {rule}: b-new's label is used (newest span)",)
    pooled = sorted([*images.y_train.tolist(), *images.y_holdout.tolist()])
    assert pooled == sorted(label for _, label in corrected)


def test_a_persons_label_beats_a_newer_models_guess(tmp_path, mnist):
    rows = scans(mnist, tmp_path, 0, 4)
    name, label = rows[0]
    guess = (label + 3) % 10
    cli("add", labels_csv(tmp_path / "person.csv", rows), "--name", "by-hand")
    lines = ["path,label,predicted,source", f"{name},{guess},{guess},model:v4"]
    (tmp_path / "guess.csv").write_text("\n".join(lines) + "\n")

    added = cli("add", tmp_path / "guess.csv", "--name", "guessed", "--accept-unreviewed")

    assert added.returncode == 0, added.stderr
    rule = f"is labelled {guess} in span guessed and {label} in span by-hand"
    why = "by-hand's label is used (a person's label over a model's guess)"
    assert added.stderr.splitlines() == [f"warning: row 1 ({name}) {rule}: {why}"]
    images = SpanStore().active_images()
    assert sorted([*images.y_train, *images.y_holdout]) == sorted(label for _, label in rows)


def test_a_torn_span_is_listed_skipped_for_training_and_removable(tmp_path, mnist):
    store = SpanStore()
    for name, start in (("good", 0), ("torn", 3)):
        rows = scans(mnist, tmp_path / name, start, 3)
        assert store.add(labels_csv(tmp_path / name / "LABELS.csv", rows), name=name).span
    record = Path(store.root) / "datasets" / "torn" / "span.json"
    record.write_bytes(record.read_bytes()[:40])  # a write cut short
    problem = "span torn is corrupt: unreadable span.json ("

    listed = cli("list")
    images = store.active_images()
    removed = cli("remove", "torn", "--reason", "torn record")
    after = cli("list")
    everything = cli("list", "--all", "--json")

    assert listed.returncode == 0, listed.stderr
    assert any(line.split()[1:3] == ["torn", "│"] for line in listed.stdout.splitlines())
    assert "corrupt" in listed.stdout
    [warning] = listed.stderr.splitlines()
    assert warning.startswith(f"warning: {problem}")
    assert images.spans == ("good",) and len(images.y_train) + len(images.y_holdout) == 3
    [skipped] = images.warnings
    assert skipped.startswith(problem) and skipped.endswith(": skipped")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.splitlines() == ["removed span torn (torn record)"]
    assert (after.stderr, "corrupt" in after.stdout) == ("", False)
    assert store.active_images().warnings == ()
    torn = [entry for entry in json.loads(everything.stdout) if entry["name"] == "torn"]
    assert [entry["retired_reason"] for entry in torn] == ["torn record"]


def test_remove_names_the_versions_and_aliases_trained_on_the_span(tmp_path, mnist, model_file):
    SpanStore().add(labels_csv(tmp_path / "LABELS.csv", scans(mnist, tmp_path, 0, 3)), name="desk")
    models = ModelStore()
    for names in ([], ["desk"], ["other", "desk"]):
        models.register(model_file, {"spans": {"names": names}})
    models.promote(2, reason="test", actor="test")
    models.promote(1, alias="staging", reason="test", actor="test")

    removed = cli("remove", "desk")

    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.splitlines() == [
        "removed span desk (manual removal)",
        "versions trained on it: v2, v3",
        "production v2 was trained on it: the next nightly retrains without it",
    ]


def test_data_scans_labels_are_added_as_they_are(tmp_path):
    out = tmp_path / "scans"
    made = subprocess.run(
        [str(DIGITFLOW), "data", "scans", str(out), "--count", "12"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr

    added = cli("add", out / "labels.csv", "--json")

    assert (added.returncode, added.stderr) == (0, "")
    assert (json.loads(added.stdout)["count"], json.loads(added.stdout)["unreviewed"]) == (12, 0)
