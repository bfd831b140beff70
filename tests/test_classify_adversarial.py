"""Bulk classification against hostile folders and outputs: nothing destroyed, dropped or lost.

Every case is built on the fly in tmp_path and run through the real `digitflow classify`
(the console script, or the same command in-process) on the DirectRunner, with a real model.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from beam_jobs.inputs import Source
from digitflow import config
from digitflow.cli import app as core_app
from digitflow.listing import (
    MAX_FILE_MIB,
    Kind,
    UnreadableError,
    path_bytes,
    path_text,
    read_file,
    walk,
)
from digitflow.scans import render_scan, write_scans
from flows.classify_cli import register

DIGITFLOW = str(Path(sys.executable).with_name("digitflow"))
IN_PROCESS = "--direct_running_mode=in_memory"
PATH_MAX = os.pathconf("/", "PC_PATH_MAX")
SUMMARY = re.compile(r"matched (\d+) files: (\d+) images, (\d+) ignored")


@dataclass
class Tree:
    """What a hostile input folder holds, as paths in bytes."""

    root: Path
    results: set[bytes] = field(default_factory=set)  # must be classified
    errors: dict[bytes, str] = field(default_factory=dict)  # must be in the errors file
    ignored: int = 0

    def add(self, name: bytes, data: bytes) -> bytes:
        path = os.fsencode(self.root) + b"/" + name
        with open(path, "wb") as handle:
            handle.write(data)
        return path


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, fmt)
    return buffer.getvalue()


def scans(tree: Tree, folder: Path, mnist, count: int, listed_as: Path | None = None) -> None:
    """`count` real scans in `folder`, listed as `listed_as` (default: itself), + labels.csv."""
    write_scans(mnist.x_test[:count], mnist.y_test[:count], folder, seed=count)
    names = [name for name in os.listdir(folder) if name != "labels.csv"]
    tree.results |= {os.fsencode((listed_as or folder) / name) for name in names}
    tree.ignored += 1


def hostile_tree(base: Path, mnist) -> Tree:
    """Good scans, awkward names, bad images, and every kind of entry that cannot be read."""
    tree = Tree(base / "in")
    tree.root.mkdir()
    scans(tree, tree.root, mnist, 6)
    scans(tree, tree.root / "nested" / "deeper", mnist, 2)
    # reached only through a symlinked sub-folder
    scans(tree, base / "elsewhere", mnist, 3, listed_as=tree.root / "linked")
    (tree.root / "linked").symlink_to("../elsewhere", target_is_directory=True)

    rng = np.random.default_rng(4)
    scan = encoded(render_scan(mnist.x_test[10], rng))
    for name in (b"caf\xe9.png", b"a\rb.png", b"line\nbreak.png", b"back\\slash.png"):
        tree.results.add(tree.add(name, scan))
    jpeg = encoded(render_scan(mnist.x_test[11], rng), "JPEG")
    for name, data, reason in (
        (b"empty.png", b"", "empty file"),
        (b"truncated.jpg", jpeg[: len(jpeg) // 2], "truncated: image data ends early"),
        (
            b"not-an-image.png",
            b"PK\x03\x04 a zip",
            "unreadable: not an image or unsupported format",
        ),
        (b"blank.png", encoded(Image.new("L", (200, 150), 240)), "blank: no ink found"),
    ):
        tree.errors[tree.add(name, data)] = reason
    tree.add(b"notes.txt", b"not an image")
    tree.ignored += 1

    root = os.fsencode(tree.root)
    for name, target, reason in (
        (b"dangling.png", b"nowhere.png", "unreadable: dangling symlink"),
        (b"dangling-folder", b"no-such-folder", "unreadable: dangling symlink"),
        (b"self.png", b"self.png", "unreadable: symlink loop"),
        (b"loop", b".", "unreadable: symlink loop (leads to a parent)"),
    ):
        os.symlink(target, root + b"/" + name)
        tree.errors[root + b"/" + name] = reason
    os.mkfifo(root + b"/fifo.png")  # never opened: reading it would wait forever
    tree.errors[root + b"/fifo.png"] = "unreadable: not a regular file (FIFO)"
    os.mkfifo(root + b"/pipe")  # not an image name: ignored, never opened
    tree.ignored += 1
    tree.errors[too_deep(root + b"/deep")] = "unreadable: path too long"
    return tree


def too_deep(folder: bytes) -> bytes:
    """Nest folders past PATH_MAX (through folder descriptors), an image at the bottom.

    Returns the first folder whose path is too long to use: where the listing must stop.
    """
    os.mkdir(folder)
    name = b"d" * 199
    first_too_long = b""
    fd = os.open(folder, os.O_RDONLY)
    path = folder
    for _ in range(int(PATH_MAX / 200) + 1):
        os.mkdir(name, dir_fd=fd)
        inner = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd, path = inner, path + b"/" + name
        if not first_too_long and len(path) >= PATH_MAX:
            first_too_long = path
    with open(os.open(b"x.png", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as handle:
        handle.write(b"never reached")
    os.close(fd)
    return first_too_long


def snapshot(top: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[int, int, int]]:
    """Every name under `top` but `skip` (links not followed, any depth): mode, size, mtime."""
    found = {}
    for folder, folders, files, fd in os.fwalk(top, follow_symlinks=False):
        folders[:] = [name for name in folders if Path(folder, name) not in skip]
        for name in folders + files:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            found[os.path.join(folder, name)] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def classify_script(*args: object) -> subprocess.CompletedProcess[str]:
    """`digitflow classify ARGS...`, the installed console script; a hang fails the test."""
    return subprocess.run(
        [DIGITFLOW, "classify", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "400"},
    )


def classify(*args: object):
    """The same command, in this process."""
    app = typer.Typer()
    app.callback()(lambda: None)  # a command group, as in `digitflow`
    register(app)
    return CliRunner().invoke(app, ["classify", *map(str, args)])


def test_every_entry_of_a_hostile_folder_is_accounted_for(model_file, mnist, tmp_path):
    tree = hostile_tree(tmp_path, mnist)
    output = tmp_path / "out" / "r.csv"
    own_state = config.home()  # the model cache: the job's own files
    before = snapshot(tmp_path, skip=(own_state,))

    done = classify_script(
        tree.root, "-o", output, "--model", model_file, IN_PROCESS, "--progress_s", "0"
    )

    assert done.returncode == 0, done.stderr
    results, errors = read_rows(output), read_rows(tmp_path / "out" / "r.errors.csv")
    assert sorted(path_bytes(row["path"]) for row in results) == sorted(tree.results)
    assert {path_bytes(row["path"]): row["error"] for row in errors} == tree.errors
    matched, images, ignored = map(int, SUMMARY.search(done.stdout).groups())
    assert matched - ignored == images == len(results) + len(errors)  # the invariant
    assert (ignored, images) == (tree.ignored, 25)
    assert snapshot(tmp_path, skip=(own_state, output.parent)) == before  # nothing else touched
    assert sorted(os.listdir(output.parent)) == ["r.csv", "r.errors.csv"]
    assert f"classifying {tree.root}: {matched} files matched" in done.stderr
    assert "progress: 1 images done by this worker" in done.stderr
    assert len(snapshot(tree.root)) == 51  # the folder's size: files, links, folders


def test_predict_accounts_for_every_entry_too(model_file, mnist, tmp_path):
    tree = hostile_tree(tmp_path, mnist)

    done = CliRunner().invoke(core_app, ["predict", str(tree.root), "--model", str(model_file)])

    assert done.exit_code == 1  # some entries could not be classified
    assert done.stdout.count(" (confidence ") == len(tree.results)
    printed_errors = [
        path_text(path) + f": error: {reason}" for path, reason in tree.errors.items()
    ]
    for line in printed_errors:
        assert line in done.stdout
    assert done.stdout.count(": error: ") == len(tree.errors)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("existing folder", "is a folder"),
        ("the input folder", "is a folder"),
        ("trailing slash", "is a folder"),
        ("glob", "has glob characters"),
        ("inside the input", "would be read as part of the input"),
        ("the input file", "would be read as part of the input"),
        ("existing results", "pass --overwrite"),
        ("existing errors file", "pass --overwrite"),
        ("existing shard", "pass --overwrite"),
    ],
)
def test_an_unsafe_output_is_refused_before_anything_runs(
    case, message, model_file, mnist, tmp_path
):
    source = tmp_path / "scans"
    write_scans(mnist.x_test[:3], mnist.y_test[:3], source, seed=1)
    (tmp_path / "results").mkdir()
    for name in ("a.csv", "b.csv", "r.csv", "r.errors.csv", "r-00001-of-00002.csv"):
        (tmp_path / "results" / name).write_text("precious\n")
    outputs = {
        "existing folder": [tmp_path / "results"],
        "the input folder": [source],
        "trailing slash": [f"{tmp_path}/new/"],
        "glob": [tmp_path / "results" / "*.csv"],
        "inside the input": [source / "r.csv"],
        "the input file": [source / "scan_00000.png", "--overwrite"],
        "existing results": [tmp_path / "results" / "r.csv"],
        "existing errors file": [tmp_path / "results" / "r.errors.csv"],
        "existing shard": [tmp_path / "results" / "r.csv", "--shards", "2"],
    }
    given = source / "scan_00000.png" if case == "the input file" else source
    before = snapshot(tmp_path)

    done = classify(given, "-o", *outputs[case], "--model", model_file, IN_PROCESS)

    assert done.exit_code == 1
    assert done.stderr.startswith("error: --output") and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("given", "output"),
    [
        ("scans", "scans/linked/r.csv"),  # into the input, through its symlinked sub-folder
        ("scans", "elsewhere/new/r.csv"),  # where that sub-folder leads: walked as scans/linked
        ("scans/**", "via/r.csv"),  # a symlink to the input folder, under a glob input
    ],
)
def test_an_output_the_input_reaches_through_a_symlink_is_refused(
    given, output, model_file, mnist, tmp_path
):
    write_scans(mnist.x_test[:3], mnist.y_test[:3], tmp_path / "scans", seed=1)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "scans" / "linked").symlink_to("../elsewhere", target_is_directory=True)
    (tmp_path / "via").symlink_to("scans", target_is_directory=True)
    before = snapshot(tmp_path)

    done = classify(tmp_path / given, "-o", tmp_path / output, "--model", model_file, IN_PROCESS)

    assert done.exit_code == 1
    assert done.stderr.startswith(f"error: --output {tmp_path / output} would be read as part")
    assert len(done.stderr.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_only_the_results_and_errors_files(model_file, mnist, tmp_path):
    write_scans(mnist.x_test[:3], mnist.y_test[:3], tmp_path / "scans", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    for name in ("r.csv", "r.errors.csv", "r-other.csv"):
        (out / name).write_text("old\n")

    done = classify(
        tmp_path / "scans", "-o", out / "r.csv", "--overwrite", "--model", model_file, IN_PROCESS
    )

    assert done.exit_code == 0, done.output
    assert len(read_rows(out / "r.csv")) == 3
    assert (out / "r.errors.csv").read_text() == "path,error\n"
    assert (out / "r-other.csv").read_text() == "old\n"


def test_an_input_without_image_files_is_an_error(model_file, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("no images here")
    (tmp_path / "empty").mkdir()

    docs = classify(tmp_path / "docs", "-o", tmp_path / "a.csv", "--model", model_file)
    empty = classify(tmp_path / "empty", "-o", tmp_path / "b.csv", "--model", model_file)

    assert docs.exit_code == 1
    assert f"error: no image files in {tmp_path / 'docs'}: 1 files, none named" in docs.stderr
    assert empty.exit_code == 1
    assert f"error: no files match {tmp_path / 'empty'}" in empty.stderr
    assert sorted(os.listdir(tmp_path)) == ["digitflow-home", "docs", "empty"]


def test_a_failed_job_removes_its_temp_folders_and_only_those(mnist, tmp_path):
    write_scans(mnist.x_test[:2], mnist.y_test[:2], tmp_path / "scans", seed=1)
    broken = tmp_path / "broken.keras"  # a .keras archive Keras cannot build a model from
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "NoSuchModel", "config": {}}))
    out = tmp_path / "out"
    stale = out / f"beam-temp-r.csv-{'0' * 32}"  # an earlier run's, not ours to delete
    stale.mkdir(parents=True)
    (stale / "part").write_text("kept")

    done = classify(tmp_path / "scans", "-o", out / "r.csv", "--model", broken, IN_PROCESS)

    assert done.exit_code == 1
    assert "the classification job failed" in done.stderr
    assert sorted(os.listdir(out)) == [stale.name]
    assert (stale / "part").read_text() == "kept"


def test_paths_survive_as_lossless_text():
    names = [b"caf\xe9.png", b"a\rb\n.png", b"back\\slash\\x41.png", "数字.png".encode(), b"\xff"]

    texts = [path_text(name) for name in names]

    assert texts[0] == "caf\\xe9.png" and texts[2] == "back\\\\slash\\\\x41.png"
    assert [path_bytes(text) for text in texts] == names
    assert [path_text(os.fsdecode(name)) for name in names] == texts


def test_reading_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)

    with pytest.raises(UnreadableError, match=r"not a regular file \(FIFO\)"):
        read_file(str(fifo))


def test_walk_lists_every_path_to_a_folder_linked_twice(tmp_path):
    (tmp_path / "top" / "real").mkdir(parents=True)
    (tmp_path / "top" / "real" / "x.png").write_bytes(b"x")
    (tmp_path / "top" / "a").symlink_to("real")
    (tmp_path / "top" / "b").symlink_to("real")

    top = tmp_path / "top"
    listed = [(Path(e.path).relative_to(top), e.kind) for e in walk(str(top))]

    assert sorted(listed) == [(Path(name, "x.png"), Kind.IMAGE) for name in ("a", "b", "real")]


def test_a_glob_reports_unreadable_entries_only_where_it_looks(tmp_path):
    (tmp_path / "sub").mkdir()
    for folder in (tmp_path, tmp_path / "sub"):
        (folder / "x.png").write_bytes(b"x")
        (folder / "gone.png").symlink_to("nowhere")
        (folder / "loop").symlink_to(".")

    top = sorted(e.path for e in Source.parse(f"{tmp_path}/*.png").entries())
    deep = sorted(e.path for e in Source.parse(f"{tmp_path}/*/*.png").entries())

    assert top == [str(tmp_path / "gone.png"), str(tmp_path / "x.png")]
    # At the top, only a dangling link could be a folder holding matches (`*/`), and the loop is.
    assert deep == [
        str(tmp_path / name) for name in ("gone.png", "loop", "sub/gone.png", "sub/x.png")
    ]


def sparse_file(path: Path, size: int) -> Path:
    """A file of `size` bytes on paper that takes no room on disk."""
    with path.open("wb") as handle:
        handle.truncate(size)
    return path


def test_a_file_over_the_size_limit_is_an_error_row_never_read(model_file, mnist, tmp_path):
    write_scans(mnist.x_test[:2], mnist.y_test[:2], tmp_path / "scans", seed=1)
    huge = sparse_file(tmp_path / "scans" / "huge.png", 2 << 20)
    out = tmp_path / "out" / "r.csv"

    done = classify(
        tmp_path / "scans", "-o", out, "--model", model_file, "--max-file-mib", "1", IN_PROCESS
    )

    assert done.exit_code == 0, done.output
    assert len(read_rows(out)) == 2
    assert read_rows(tmp_path / "out" / "r.errors.csv") == [
        {"path": str(huge), "error": "too large: 2.0 MiB (limit 1 MiB)"}
    ]


def test_reading_a_huge_sparse_file_is_refused_by_its_size(tmp_path):
    huge = sparse_file(tmp_path / "huge.png", 3 << 30)  # 3 GiB: read, it would take 3 GB

    with pytest.raises(UnreadableError, match=r"^too large: 3,072\.0 MiB \(limit 64 MiB\)$"):
        read_file(str(huge), max_mib=MAX_FILE_MIB)


def test_a_store_that_is_a_file_is_refused_before_the_job_starts(mnist, tmp_path):
    write_scans(mnist.x_test[:2], mnist.y_test[:2], tmp_path / "scans", seed=1)
    not_a_store = tmp_path / "store.txt"
    not_a_store.write_text("not a store\n")

    done = classify(tmp_path / "scans", "-o", tmp_path / "out" / "r.csv", "--store", not_a_store)

    assert done.exit_code == 1
    assert done.stderr.strip() == f"error: --store: store root {not_a_store} is not a directory"
    assert not (tmp_path / "out").exists()
