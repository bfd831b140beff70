"""Realistic scans: every format and mode written, deterministic, and readable back as digits."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

from digitflow.preprocess import to_mnist
from digitflow.scans import SCAN_FORMATS, render_scan, write_scans


def ring_digit() -> np.ndarray:
    """A '0': an anti-aliased ring, 28x28 uint8 white on black, 20 px tall, as in MNIST."""
    rows, cols = np.indices((28, 28))
    radius = np.hypot(rows - 14.25, (cols - 14.25) / 0.7)
    return (np.clip(1.5 - np.abs(radius - 8.5), 0.0, 1.0) * 255).astype(np.uint8)


def bar_digit() -> np.ndarray:
    """A '1': a slanted bar with a flag at the top, 28x28 uint8 white on black, 20 px tall."""
    rows, cols = np.indices((28, 28))
    centre = 14.5 - (rows - 14.5) * 0.15
    stem = (np.abs(cols - centre) < 1.6) & (rows >= 5) & (rows <= 24)
    flag = (np.abs(cols - (centre - 8 + rows)) < 1.2) & (rows >= 5) & (rows <= 8)
    return np.where(stem | flag, 255, 0).astype(np.uint8)


COUNT = 24  # four rounds of the six formats: every mode variant appears
DIGITS = np.stack([ring_digit(), bar_digit()] * (COUNT // 2))
LABELS = np.array([0, 1] * (COUNT // 2))


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of scans written once for this module; returns its labels.csv."""
    return write_scans(DIGITS, LABELS, tmp_path_factory.mktemp("scans"), seed=7)


def rows(labels_csv: Path) -> list[dict[str, str]]:
    """The labels.csv rows."""
    with labels_csv.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_one_file_per_digit_in_every_format(scans: Path) -> None:
    assert scans.name == "labels.csv"
    assert scans.read_text().splitlines()[0] == "file,label"
    table = rows(scans)
    assert len(table) == COUNT
    assert [int(row["label"]) for row in table] == LABELS.tolist()
    assert table[0]["file"] == "scan_00000.png"
    assert {Path(row["file"]).suffix[1:] for row in table} == set(SCAN_FORMATS)
    assert all((scans.parent / row["file"]).is_file() for row in table)


def test_files_decode_in_mixed_modes(scans: Path) -> None:
    modes = set()
    for row in rows(scans):
        with Image.open(scans.parent / row["file"]) as image:
            image.load()
            modes.add(image.mode)
            expected = {"jpg": "JPEG", "tiff": "TIFF"}.get(Path(row["file"]).suffix[1:])
            assert image.format == (expected or Path(row["file"]).suffix[1:].upper())
            assert min(image.size) >= 64 and max(image.size) <= 256
    assert {"RGB", "L", "RGBA", "I;16", "CMYK", "P"} <= modes


def test_some_jpegs_are_stored_rotated_with_an_exif_orientation(scans: Path) -> None:
    orientations = set()
    for row in rows(scans):
        if row["file"].endswith(".jpg"):
            with Image.open(scans.parent / row["file"]) as image:
                orientations.add(image.getexif().get(ExifTags.Base.Orientation, 1))
    assert orientations == {1, 6}


def test_scans_preprocess_back_to_their_digits(scans: Path) -> None:
    matches = []
    for row in rows(scans):
        out = to_mnist((scans.parent / row["file"]).read_bytes()).ravel()
        own, other = (
            np.corrcoef(out, DIGITS[i].ravel())[0, 1]
            for i in (int(row["label"]), 1 - int(row["label"]))
        )
        assert own > max(0.6, other + 0.2), row["file"]
        matches.append(own)
    assert np.mean(matches) > 0.8


def test_same_seed_same_files(tmp_path: Path) -> None:
    first = write_scans(DIGITS[:6], LABELS[:6], tmp_path / "a", seed=3).parent
    second = write_scans(DIGITS[:6], LABELS[:6], tmp_path / "b", seed=3).parent
    other = write_scans(DIGITS[:6], LABELS[:6], tmp_path / "c", seed=4).parent
    names = sorted(path.name for path in first.iterdir())
    assert names == sorted(path.name for path in second.iterdir())
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)
    assert any((first / n).read_bytes() != (other / n).read_bytes() for n in names)


def test_render_scan_is_dark_ink_on_paper() -> None:
    scan = render_scan(ring_digit(), np.random.default_rng(0))
    assert scan.mode == "RGB"
    assert min(scan.size) >= 64 and max(scan.size) <= 256
    grey = np.asarray(scan.convert("L"))
    assert np.median(grey) > 180  # mostly paper
    assert grey.min() < 110  # with dark ink
    again = render_scan(ring_digit(), np.random.default_rng(0))
    assert np.array_equal(np.asarray(again), np.asarray(scan))


def test_render_scan_varies_position_and_size() -> None:
    rng = np.random.default_rng(1)
    centres, sizes = set(), set()
    for _ in range(8):
        grey = 255 - np.asarray(render_scan(bar_digit(), rng).convert("L")).astype(np.float32)
        ink = np.argwhere(grey > grey.max() / 2)
        centres.add(tuple((ink.mean(axis=0) / grey.shape).round(1)))
        sizes.add(grey.shape)
    assert len(centres) > 4
    assert len(sizes) == 8


def test_mismatched_labels_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="labels"):
        write_scans(DIGITS[:4], LABELS[:3], tmp_path)
