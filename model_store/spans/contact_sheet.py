"""A review's contact sheets: each row's scan read again and drawn as a tile (the model's 28x28
view upscaled beside the original in grey, or why it cannot be read now, then its row number,
predicted digit and confidence), TILES_PER_SHEET tiles a sheet in rows of COLUMNS."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digitflow import locations
from digitflow.listing import MAX_FILE_MIB, UnreadableError, path_bytes
from digitflow.preprocess import PreprocessError, to_mnist
from digitflow.preprocess.decode import grayscale, open_image
from digitflow.results import Result

TILES_PER_SHEET = 120  # 20 lines of COLUMNS tiles: a sheet of 1488 x 3312 pixels
SIDE = 112  # each of a tile's two images: 28x28 upscaled 4 times
PAD = 8
CAPTION = 36  # two lines of text under the images
TILE = (2 * SIDE + 3 * PAD, SIDE + 2 * PAD + CAPTION)
COLUMNS = 6
HEADER = 32
INK, RED, FRAME = (30, 30, 30), (200, 30, 30), (200, 200, 200)


def sheet_pages(rows: Sequence[Result]) -> list[tuple[int, Sequence[Result]]]:
    """The rows of each sheet, TILES_PER_SHEET at most, with the number of its first row."""
    starts = range(0, len(rows), TILES_PER_SHEET)
    return [(start + 1, rows[start : start + TILES_PER_SHEET]) for start in starts]


def sheet_name(page: int) -> str:
    """Sheet `page`'s file name, from 1: `contact-sheet-1.png`."""
    return f"contact-sheet-{page}.png"


def load_scan(path: str, max_file_mib: int = MAX_FILE_MIB) -> tuple[np.ndarray, Image.Image] | str:
    """(the model's 28x28 input, the original in grey) for a path as the job wrote it, or
    the reason it cannot be read now (a file over `max_file_mib` MiB is not read)."""
    try:
        data = locations.read(path_bytes(path), max_file_mib)
        return to_mnist(data), grayscale(open_image(data))
    except (UnreadableError, PreprocessError) as error:
        return str(error)


def render_tile(
    number: int, row: Result, scan: tuple[np.ndarray, Image.Image] | str
) -> Image.Image:
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
