"""A bulk run's least confident rows, laid out for a person to label (`digitflow review`).

From one or more results CSV files (columns in `beam_jobs.csv_rows`; every shard of a run may
be given) it picks the rows below a confidence (or every row), lowest confidence first, at most
`limit` (MAX_LIMIT at most), and writes into a new or empty folder outside the scans' own:

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
"""

from __future__ import annotations

import csv
import heapq
import html
import io
import os
import tempfile
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TextIO

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digitflow import objects
from digitflow.labels import parse_digit
from digitflow.listing import MAX_FILE_MIB, UnreadableError, path_bytes, path_text
from digitflow.preprocess import PreprocessError, to_mnist
from digitflow.preprocess.decode import grayscale, open_image
from model_store.spans.rows import GUESS, csv_folder, resolve_path

PAGE, LABELS = "index.html", "labels.csv"
MAX_LIMIT = 1_000  # rows a review takes: ~5 s, ~130 MB peak; more is for another round
TILES_PER_SHEET = 120  # 20 lines of COLUMNS tiles: a sheet of 1488 x 3312 pixels
SIDE = 112  # each of a tile's two images: 28x28 upscaled 4 times
PAD = 8
CAPTION = 36  # two lines of text under the images
TILE = (2 * SIDE + 3 * PAD, SIDE + 2 * PAD + CAPTION)
COLUMNS = 6
HEADER = 32
NEEDED = ("path", "digit", "confidence")
INK, RED, FRAME = (30, 30, 30), (200, 30, 30), (200, 200, 200)


class ReviewError(Exception):
    """The review cannot be written; `str()` says why, in one line."""


@dataclass(frozen=True)
class Row:
    """One results row: its path (resolved, as `path_text` writes it), the predicted digit, its
    probability (None for a digit that is not one of 0-9 or a confidence that is not a
    probability) and the model that predicted it."""

    path: str
    digit: int | None
    confidence: float | None
    model_version: str = ""

    @property
    def rank(self) -> float:
        """Its place, lowest first: the confidence, below every one when either value is None."""
        if self.digit is None or self.confidence is None:
            return -1.0
        return self.confidence

    @property
    def trusted(self) -> bool:
        """Whether its prediction can prefill its label."""
        return self.rank >= 0.0


@dataclass(frozen=True)
class Selection:
    """The rows to review, in order, how many met the filter before the limit, and the folder
    holding every local scan of the results (None: none is local)."""

    rows: list[Row]
    matching: int
    folder: bytes | None


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
    unlabelled = sum(not row.trusted for row in selection.rows)
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
    out: Path, rows: Sequence[Row], title: str, max_file_mib: int
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


def sheet_pages(rows: Sequence[Row]) -> list[tuple[int, Sequence[Row]]]:
    """The rows of each sheet, TILES_PER_SHEET at most, with the number of its first row."""
    starts = range(0, len(rows), TILES_PER_SHEET)
    return [(start + 1, rows[start : start + TILES_PER_SHEET]) for start in starts]


def sheet_name(page: int) -> str:
    """Sheet `page`'s file name, from 1: `contact-sheet-1.png`."""
    return f"contact-sheet-{page}.png"


def read_rows(results: Sequence[str]) -> Iterator[Row]:
    """Every row of the results files, in file order; ReviewError for a file that is not one."""
    for name in results:
        with _open_text(name) as text:
            try:
                yield from _rows(name, csv.DictReader(text), csv_folder(name))
            except UnicodeDecodeError:
                raise ReviewError(f"{name} is not a results file: not UTF-8 text") from None


def _rows(name: str, reader: csv.DictReader, folder: str) -> Iterator[Row]:
    missing = [column for column in NEEDED if column not in (reader.fieldnames or ())]
    if missing:
        raise ReviewError(f"{name} is not a results file: no column {', '.join(missing)}")
    for record in reader:
        path, digit, confidence = (record[column] for column in NEEDED)
        if path is None or digit is None or confidence is None:  # fewer cells than columns
            raise ReviewError(f"{name}, line {reader.line_num}: not a results row")
        version = record.get("model_version") or ""
        yield Row(_resolved(path, folder), parse_digit(digit), _probability(confidence), version)


def _resolved(path: str, folder: str) -> str:
    """`path` as the results file names it, resolved from the file's `folder`, as text."""
    return path_text(resolve_path(path, folder)) if path else path


def _probability(text: str) -> float | None:
    """The number `text` is, if it is a probability (0 to 1); None if not (`nan` included)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 else None


def select(rows: Iterator[Row], below: float | None, limit: int) -> Selection:
    """The rows below `below` (None: all; untrusted rows always), lowest rank first (ties in
    file order), at most `limit`; only those are kept in memory. Also finds the folder holding
    every local scan of `rows`."""
    kept: list[tuple[float, int, Row]] = []  # a heap of (-rank, -order, row)
    matching, folder = 0, None
    for order, row in enumerate(rows):
        folder = _common_folder(folder, row.path)
        if below is not None and row.rank >= below:
            continue
        matching += 1
        item = (-row.rank, -order, row)
        if len(kept) < limit:
            heapq.heappush(kept, item)
        elif item > kept[0]:
            heapq.heapreplace(kept, item)
    return Selection([row for *_, row in sorted(kept, reverse=True)], matching, folder)


def _common_folder(folder: bytes | None, path: str) -> bytes | None:
    """The folder holding `folder` (None: none yet) and the scan at `path`, if it is local."""
    if objects.is_object_uri(path):
        return folder
    parent = os.path.dirname(os.path.abspath(path_bytes(path)))
    return parent if folder is None else os.path.commonpath([folder, parent])


def load_scan(path: str, max_file_mib: int = MAX_FILE_MIB) -> tuple[np.ndarray, Image.Image] | str:
    """(the model's 28x28 input, the original in grey) for a path as the job wrote it, or
    the reason it cannot be read now (a file over `max_file_mib` MiB is not read)."""
    try:
        data = objects.read_bytes(path_bytes(path), max_file_mib)
        return to_mnist(data), grayscale(open_image(data))
    except (UnreadableError, PreprocessError) as error:
        return str(error)


def render_tile(number: int, row: Row, scan: tuple[np.ndarray, Image.Image] | str) -> Image.Image:
    """One tile: the model's view and the original side by side, or why the scan is unreadable,
    then `#N  predicted D  confidence C` and the file's name."""
    tile = Image.new("RGB", TILE, "white")
    draw = ImageDraw.Draw(tile)
    font = _font(12)
    if isinstance(scan, str):
        draw.rectangle((PAD - 1, PAD - 1, TILE[0] - PAD, PAD + SIDE), outline=FRAME)
        lines = textwrap.wrap(f"cannot read this scan now: {scan}", 34)[:6]
        draw.multiline_text((PAD + 4, PAD + 4), "\n".join(lines), fill=RED, font=font)
    else:
        for x, image in ((PAD, _model_view(scan[0])), (2 * PAD + SIDE, _fitted(scan[1]))):
            draw.rectangle((x - 1, PAD - 1, x + SIDE, PAD + SIDE), outline=FRAME)
            tile.paste(image, (x, PAD))
    digit = "?" if row.digit is None else row.digit
    confidence = "?" if row.confidence is None else f"{row.confidence:.3f}"
    caption = f"#{number}  predicted {digit}  confidence {confidence}"
    name = _shortened(os.path.basename(row.path) or row.path, 38)
    draw.text((PAD, SIDE + 2 * PAD), caption, fill=INK, font=font)
    draw.text((PAD, SIDE + 2 * PAD + 16), name, fill=INK, font=font)
    return tile


def _model_view(view: np.ndarray) -> Image.Image:
    """The 28x28 input, dark ink on white, upscaled without smoothing."""
    pixels = (255 - np.clip(view, 0.0, 1.0) * 255).round().astype(np.uint8)
    return Image.fromarray(pixels).resize((SIDE, SIDE), Image.Resampling.NEAREST)


def _fitted(original: Image.Image) -> Image.Image:
    """The original, shrunk to fit a SIDE x SIDE square, centred on white."""
    thumb = original.copy()
    thumb.thumbnail((SIDE, SIDE))
    square = Image.new("L", (SIDE, SIDE), 255)
    square.paste(thumb, ((SIDE - thumb.width) // 2, (SIDE - thumb.height) // 2))
    return square


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _shortened(text: str, width: int) -> str:
    return text if len(text) <= width else f"…{text[-(width - 1) :]}"


def contact_sheet(tiles: Sequence[Image.Image], title: str) -> Image.Image:
    """The tiles in rows of COLUMNS under a title line."""
    rows = -(-len(tiles) // COLUMNS)
    sheet = Image.new("RGB", (COLUMNS * TILE[0], HEADER + rows * TILE[1]), "white")
    ImageDraw.Draw(sheet).text((PAD, PAD), title, fill=INK, font=_font(14))
    for index, tile in enumerate(tiles):
        column, line = index % COLUMNS, index // COLUMNS
        sheet.paste(tile, (column * TILE[0], HEADER + line * TILE[1]))
    return sheet


def index_html(rows: Sequence[Row], title: str) -> str:
    """A static page: each sheet (a file beside it), then its rows' full paths; nothing else."""
    sections = "\n".join(
        _sheet_section(page, first, page_rows)
        for page, (first, page_rows) in enumerate(sheet_pages(rows), start=1)
    )
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n"
        "<style>body{font-family:sans-serif;margin:16px}img{max-width:100%}"
        "li{font-size:12px;overflow-wrap:anywhere}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        f"<p>Correct the labels in {LABELS} (row N is its line N after the header) and set "
        "<code>source</code> to <code>person</code> where the prefilled label is right, then "
        f"<code>digitflow data add {LABELS}</code>.</p>\n{sections}\n</body>\n</html>\n"
    )


def _sheet_section(page: int, first: int, rows: Sequence[Row]) -> str:
    """One sheet on the page: its image, then its rows' paths numbered from `first`."""
    last = first + len(rows) - 1
    paths = "\n".join(f"<li>{html.escape(row.path)}</li>" for row in rows)
    return (
        f"<h2>Sheet {page}: rows {first} to {last}</h2>\n"
        f'<img alt="rows {first} to {last}" src="{sheet_name(page)}">\n'
        f'<ol start="{first}">\n{paths}\n</ol>'
    )


def labels_csv(rows: Sequence[Row]) -> str:
    """`path,label,predicted,source` in the sheets' order: each label the prediction (blank
    for an untrusted row), marked as the model's guess."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # "\r\n" ends records: a `\r` or `\n` in a path gets quoted
    writer.writerow(("path", "label", "predicted", "source"))
    for row in rows:
        digit = row.digit if row.trusted else ""
        writer.writerow((row.path, digit, digit, f"{GUESS}{row.model_version or 'unknown'}"))
    return buffer.getvalue()


def _title(results: Sequence[str], below: float | None, shown: int, matching: int) -> str:
    which = "" if below is None else f" below confidence {below:g}"
    source = results[0] if len(results) == 1 else f"{len(results)} results files"
    return f"{source}: {shown:,} of {matching:,} rows{which}, lowest confidence first"


def _open_text(name: str) -> TextIO:
    """A results file as text for the csv module, local or an s3:// or gs:// object."""
    try:
        if not objects.is_object_uri(name):
            return open(name, encoding="utf-8", newline="")  # the caller closes it
        found = objects.get(name)
    except OSError as error:
        raise ReviewError(f"cannot read {name}: {error.strerror or error}") from None
    if found is None:
        raise ReviewError(f"cannot read {name}: no such object")
    return io.TextIOWrapper(io.BytesIO(found.data), encoding="utf-8", newline="")


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
