"""A bulk run's least confident rows, laid out for a person to label (`digitflow review`).

From one or more results CSV files (read as `digitflow.results.Result`s; every shard of a run
may be given) it picks the rows below a confidence (or every row), lowest confidence first, at
most `limit` (MAX_LIMIT at most), and writes into a new or empty folder outside the scans' own:

- `contact-sheet-1.png`, `-2.png`...: grids of at most TILES_PER_SHEET tiles, each the scan as
  the model saw it (28x28, upscaled) beside the original (grey, upright), with its row number,
  predicted digit and confidence;
- `index.html`: a static page showing the sheets, each followed by its rows' full paths;
- `labels.csv`: `path,label,predicted,source`, each label prefilled with the prediction and
  marked as the model's guess (`source` `model:v7`, the results' model_version); row N of the
  sheets is its Nth line after the header. A person edits a wrong label, and sets `source` to
  `person` where the prefilled label is right; `digitflow data add DIR/labels.csv` takes it
  back, and refuses rows still a model's guess (`model_store.spans.rows`).

Paths follow the rule of every CSV file digitflow reads (`model_store.spans.rows.resolve_path`):
a relative path in a results file is relative to that file's folder; labels.csv gets it
absolute, so `data add` finds the same file wherever labels.csv is.

The folder is checked, and created, before anything is drawn. A row whose digit is not one of
0-9 or whose confidence is not a probability (`nan`, `inf`, out of 0-1) is not trusted: it
counts as the least confident, and its label is left blank. Scan paths are the job's lossless
text (`digitflow.listing.path_text`): local files, or s3:// and gs:// objects. A scan that can
no longer be read, or is larger than `max_file_mib`, still gets its tile, saying so, and its
line. No TensorFlow, Beam or Prefect: numpy and Pillow only.

This module checks the folder and writes the files; `review_rows` picks the rows,
`contact_sheet` draws the sheets and `review_text` writes index.html and labels.csv.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from digitflow.listing import MAX_FILE_MIB
from digitflow.results import Result
from model_store.spans.contact_sheet import (
    contact_sheet,
    load_scan,
    render_tile,
    sheet_name,
    sheet_pages,
)
from model_store.spans.review_rows import ReviewError, read_rows, select, trusted
from model_store.spans.review_text import LABELS, PAGE, index_html, labels_csv

MAX_LIMIT = 1_000  # rows a review takes: ~5 s, ~130 MB peak; more is for another round


@dataclass(frozen=True)
class Written:
    """What `review` wrote: its files, the rows on them, how many scans were unreadable and
    how many rows were left unlabelled (not trusted)."""

    files: list[Path]
    rows: int
    matching: int
    unreadable: int
    unlabelled: int


def review(
    results: Sequence[str],
    out: Path,
    below: float | None,
    limit: int,
    max_file_mib: int = MAX_FILE_MIB,
) -> Written:
    """Write the sheets, the page and labels.csv for `results`' rows below `below` (None: all)
    into `out`, a new or empty folder outside the scans' own, checked and created before
    anything is drawn. Nothing is written when no row is selected."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ReviewError(f"--limit {limit}: a review takes 1 to {MAX_LIMIT:,} rows")
    check_folder(out)
    selection = select(read_rows(results), below, limit)
    if not selection.rows:
        return Written([], 0, 0, 0, 0)
    check_outside(out, selection.folder)
    make_folder(out)
    title = _title(results, below, len(selection.rows), selection.matching)
    sheets, unreadable = write_sheets(out, selection.rows, title, max_file_mib)
    files = [
        *sheets,
        _write(out / PAGE, index_html(selection.rows, title).encode()),
        _write(out / LABELS, labels_csv(selection.rows).encode()),
    ]
    unlabelled = sum(not trusted(row) for row in selection.rows)
    return Written(files, len(selection.rows), selection.matching, unreadable, unlabelled)


def check_folder(out: Path) -> None:
    """ReviewError unless `out` is a new or empty folder: a user's files are never replaced."""
    if out.is_symlink() and not out.exists():
        raise ReviewError(f"{out} is a dangling symlink: give a new or empty folder")
    if out.exists() and not out.is_dir():
        raise ReviewError(f"{out} exists and is not a folder")
    try:
        if out.is_dir() and any(out.iterdir()):
            raise ReviewError(f"{out} is not empty: give a new or empty folder")
    except OSError as error:
        raise ReviewError(f"cannot list {out}: {error.strerror or error}") from None


def check_outside(out: Path, folder: bytes | None) -> None:
    """ReviewError when `out` lies in `folder`, the scans' own (links resolved): the next run
    over that folder would read the sheets as scans."""
    if folder is None:
        return
    scans, target = os.path.realpath(folder), os.path.realpath(os.fsencode(out))
    if os.path.commonpath([scans, target]) == scans:
        raise ReviewError(
            f"{out} is inside {os.fsdecode(folder)}, the folder of the scans: a run over it "
            "would read the contact sheets as scans; give a folder outside it"
        )


def make_folder(out: Path) -> None:
    """Create `out` if needed; ReviewError, in one line, unless files can be created in it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as error:
        raise ReviewError(f"cannot write into {out}: {error.strerror or error}") from None


def write_sheets(
    out: Path, rows: Sequence[Result], title: str, max_file_mib: int
) -> tuple[list[Path], int]:
    """The contact sheets of `rows`, drawn and written one at a time (only one sheet's tiles
    are in memory); and how many scans could not be read."""
    sheets, unreadable = [], 0
    pages = sheet_pages(rows)
    for page, (first, page_rows) in enumerate(pages, start=1):
        tiles = []
        for number, row in enumerate(page_rows, start=first):
            scan = load_scan(row.path, max_file_mib)
            unreadable += isinstance(scan, str)
            tiles.append(render_tile(number, row, scan))
        sheet = contact_sheet(tiles, f"{title} (sheet {page} of {len(pages)})")
        sheets.append(_write(out / sheet_name(page), _png(sheet)))
    return sheets, unreadable


def _title(results: Sequence[str], below: float | None, shown: int, matching: int) -> str:
    which = "" if below is None else f" below confidence {below:g}"
    source = results[0] if len(results) == 1 else f"{len(results)} results files"
    return f"{source}: {shown:,} of {matching:,} rows{which}, lowest confidence first"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> Path:
    """A new file; ReviewError if one appeared there meanwhile (it is left alone)."""
    try:
        with path.open("xb") as handle:
            handle.write(data)
    except FileExistsError:
        raise ReviewError(f"{path} appeared while the review was written; left as it was") from None
    except OSError as error:  # e.g. a full disk
        raise ReviewError(f"cannot write {path}: {error.strerror or error}") from None
    return path
