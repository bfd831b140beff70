"""The tutorials' pictures in one PNG: correct predictions, wrong ones, and the confusion matrix."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digitflow.evaluate import Evaluation

CELL = 64  # one digit tile, label included
GRID = 6  # tiles per side of each digit grid
MATRIX_CELL = 38
MARGIN = 24
GREEN, RED, INK = (20, 130, 60), (200, 30, 30), (30, 30, 30)


def _digit_grid(images, captions, colour, title, font) -> Image.Image:
    grid = Image.new("RGB", (GRID * CELL, GRID * CELL + MARGIN), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((4, 2), title, fill=INK, font=font)
    for n, (image, caption) in enumerate(zip(images[: GRID * GRID], captions, strict=False)):
        x, y = (n % GRID) * CELL, (n // GRID) * CELL + MARGIN
        tile = Image.fromarray(255 - image).resize((CELL - 16, CELL - 16), Image.NEAREST)
        grid.paste(tile, (x + 8, y))
        draw.text((x + 8, y + CELL - 16), caption, fill=colour, font=font)
    return grid


def _confusion_matrix(confusion: np.ndarray, font) -> Image.Image:
    size = 11 * MATRIX_CELL
    matrix = Image.new("RGB", (size, size + MARGIN), "white")
    draw = ImageDraw.Draw(matrix)
    draw.text((4, 2), "Confusion (rows: true, columns: predicted)", fill=INK, font=font)
    row_max = confusion.max(axis=1, keepdims=True).clip(min=1)
    for d in range(10):
        draw.text(((d + 1) * MATRIX_CELL + 14, MARGIN + 10), str(d), fill=INK, font=font)
        draw.text((14, (d + 1) * MATRIX_CELL + MARGIN + 10), str(d), fill=INK, font=font)
    for (true, pred), count in np.ndenumerate(confusion):
        x, y = (pred + 1) * MATRIX_CELL, (true + 1) * MATRIX_CELL + MARGIN
        shade = int(255 * (1 - count / row_max[true, 0]))
        fill = (shade, shade, 255) if true == pred else (255, shade, shade)
        draw.rectangle((x, y, x + MATRIX_CELL - 2, y + MATRIX_CELL - 2), fill=fill)
        if count:
            text_colour = "white" if shade < 110 else INK
            draw.text((x + 3, y + 12), str(count), fill=text_colour, font=font)
    return matrix


def render_report(
    images: np.ndarray, labels: np.ndarray, evaluation: Evaluation, title: str
) -> Image.Image:
    """uint8 images (n, 28, 28), their true labels and the model's evaluation on them -> PNG."""
    predicted = labels.astype(np.int64)  # right everywhere but at the recorded mistakes
    for mistake in evaluation.mistakes:
        predicted[mistake.index] = mistake.predicted
    font = ImageFont.load_default(size=12)
    right = np.flatnonzero(predicted == labels)
    wrong = np.flatnonzero(predicted != labels)
    panels = [
        _digit_grid(images[right], [f"{predicted[i]}" for i in right], GREEN, "Correct", font),
        _digit_grid(
            images[wrong],
            [f"{predicted[i]} (true {labels[i]})" for i in wrong],
            RED,
            f"Wrong ({len(wrong)} of {len(labels)})",
            font,
        ),
        _confusion_matrix(np.asarray(evaluation.confusion), font),
    ]
    width = sum(p.width for p in panels) + MARGIN * (len(panels) + 1)
    height = max(p.height for p in panels) + 2 * MARGIN + 20
    report = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(report).text((MARGIN, 10), title, fill=INK, font=ImageFont.load_default(size=16))
    x = MARGIN
    for panel in panels:
        report.paste(panel, (x, MARGIN + 20))
        x += panel.width + MARGIN
    return report
