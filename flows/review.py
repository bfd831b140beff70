"""A bulk run's least confident rows, laid out for a person to label (`digitflow review`).

From one or more results CSV files (columns in `beam_jobs.csv_rows`; every shard of a run may
be given) it picks the rows below a confidence (or every row), lowest confidence first, at most
`limit`, and writes into a new or empty folder:

- `contact-sheet.png`: a grid of tiles, each the scan as the model saw it (28x28, upscaled)
  beside the original (grey, upright), with its row number, predicted digit and confidence;
- `index.html`: the same tiles on a static page, images inline (`data:` URIs), nothing external;
- `labels.csv`: `path,label`, prefilled with the predictions, paths exactly as in the results;
  row N of the sheet is its Nth line after the header. Corrected, it goes back in with
  `digitflow data add DIR/labels.csv`.

Scan paths are the job's lossless text (`digitflow.listing.path_text`): local files, or s3://
and gs:// objects. A scan that can no longer be read still gets its tile, saying so, and its
line. No TensorFlow, Beam or Prefect: numpy and Pillow only.
"""

from __future__ import annotations

import base64
import csv
import heapq
import html
import io
import os
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TextIO

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digitflow import objects
from digitflow.listing import UnreadableError, path_bytes
from digitflow.preprocess import PreprocessError, to_mnist
from digitflow.preprocess.decode import grayscale, open_image

SHEET, PAGE, LABELS = "contact-sheet.png", "index.html", "labels.csv"
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
    """One results row: the path as the job wrote it, the predicted digit, its probability."""

    path: str
    digit: int
    confidence: float


@dataclass(frozen=True)
class Selection:
    """The rows to review, in order, and how many met the filter before the limit."""

    rows: list[Row]
    matching: int


@dataclass(frozen=True)
class Written:
    """What `review` wrote: its files, the rows on them and how many scans were unreadable."""

    files: list[Path]
    rows: int
    matching: int
    unreadable: int


def review(results: Sequence[str], out: Path, below: float | None, limit: int) -> Written:
    """Write the sheet, the page and labels.csv for `results`' rows below `below` (None: all)
    into `out`, a new or empty folder. Nothing is written when no row is selected."""
    check_folder(out)
    selection = select(read_rows(results), below, limit)
    if not selection.rows:
        return Written([], 0, 0, 0)
    tiles, unreadable = [], 0
    for number, row in enumerate(selection.rows, start=1):
        scan = load_scan(row.path)
        unreadable += isinstance(scan, str)
        tiles.append(render_tile(number, row, scan))
    title = _title(results, below, len(tiles), selection.matching)
    out.mkdir(parents=True, exist_ok=True)
    files = [
        _write(out / SHEET, _png(contact_sheet(tiles, title))),
        _write(out / PAGE, index_html(selection.rows, tiles, title).encode()),
        _write(out / LABELS, labels_csv(selection.rows).encode()),
    ]
    return Written(files, len(tiles), selection.matching, unreadable)


def check_folder(out: Path) -> None:
    """ReviewError unless `out` is a new or empty folder: a user's files are never replaced."""
    if out.exists() and not out.is_dir():
        raise ReviewError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise ReviewError(f"{out} is not empty: give a new or empty folder")


def read_rows(results: Sequence[str]) -> Iterator[Row]:
    """Every row of the results files, in file order; ReviewError for a file that is not one."""
    for name in results:
        with _open_text(name) as text:
            try:
                yield from _rows(name, csv.DictReader(text))
            except UnicodeDecodeError:
                raise ReviewError(f"{name} is not a results file: not UTF-8 text") from None


def _rows(name: str, reader: csv.DictReader) -> Iterator[Row]:
    missing = [column for column in NEEDED if column not in (reader.fieldnames or ())]
    if missing:
        raise ReviewError(f"{name} is not a results file: no column {', '.join(missing)}")
    for record in reader:
        try:
            yield Row(record["path"], int(record["digit"]), float(record["confidence"]))
        except (TypeError, ValueError):
            raise ReviewError(f"{name}, line {reader.line_num}: not a results row") from None


def select(rows: Iterator[Row], below: float | None, limit: int) -> Selection:
    """The rows below `below` (None: all), lowest confidence first (ties in file order), at
    most `limit`; only those are kept in memory."""
    kept: list[tuple[float, int, Row]] = []  # a heap of (-confidence, -order, row)
    matching = 0
    for order, row in enumerate(rows):
        if below is not None and row.confidence >= below:
            continue
        matching += 1
        item = (-row.confidence, -order, row)
        if len(kept) < limit:
            heapq.heappush(kept, item)
        elif item > kept[0]:
            heapq.heapreplace(kept, item)
    return Selection([row for *_, row in sorted(kept, reverse=True)], matching)


def load_scan(path: str) -> tuple[np.ndarray, Image.Image] | str:
    """(the model's 28x28 input, the original in grey) for a path as the job wrote it, or
    the reason it cannot be read now."""
    try:
        data = objects.read_bytes(path_bytes(path))
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
    caption = f"#{number}  predicted {row.digit}  confidence {row.confidence:.3f}"
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


def index_html(rows: Sequence[Row], tiles: Sequence[Image.Image], title: str) -> str:
    """A static page of the tiles, each with its full path; images inline, nothing external."""
    figures = "\n".join(
        f'<figure><img alt="row {number}" src="data:image/png;base64,{_base64_png(tile)}">'
        f"<figcaption>{number}. {html.escape(row.path)}</figcaption></figure>"
        for number, (row, tile) in enumerate(zip(rows, tiles, strict=True), start=1)
    )
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n"
        "<style>body{font-family:sans-serif;margin:16px}figure{display:inline-block;"
        f"margin:4px;width:{TILE[0]}px;vertical-align:top}}figcaption{{font-size:12px;"
        "overflow-wrap:anywhere}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        f"<p>Correct the labels in {LABELS} (row N is its line N after the header), then "
        f"<code>digitflow data add {LABELS}</code>.</p>\n{figures}\n</body>\n</html>\n"
    )


def labels_csv(rows: Sequence[Row]) -> str:
    """`path,label`, each label the prediction, in the sheet's order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # "\r\n" ends records: a `\r` or `\n` in a path gets quoted
    writer.writerow(("path", "label"))
    writer.writerows((row.path, row.digit) for row in rows)
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


def _base64_png(image: Image.Image) -> str:
    return base64.b64encode(_png(image)).decode("ascii")


def _write(path: Path, data: bytes) -> Path:
    """A new file; ReviewError if one appeared there meanwhile (it is left alone)."""
    try:
        with path.open("xb") as handle:
            handle.write(data)
    except FileExistsError:
        raise ReviewError(f"{path} appeared while the review was written; left as it was") from None
    return path
