"""A review's two text files: `index.html`, a static page showing the contact sheets, each
followed by its rows' full paths; and `labels.csv`, `path,label,predicted,source` in the
sheets' order, each label prefilled with the prediction and marked as the model's guess."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence

from digitflow.results import Result
from model_store.spans.contact_sheet import sheet_name, sheet_pages
from model_store.spans.review_rows import trusted
from model_store.spans.rows import GUESS

PAGE, LABELS = "index.html", "labels.csv"


def index_html(rows: Sequence[Result], title: str) -> str:
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


def _sheet_section(page: int, first: int, rows: Sequence[Result]) -> str:
    """One sheet on the page: its image, then its rows' paths numbered from `first`."""
    last = first + len(rows) - 1
    paths = "\n".join(f"<li>{html.escape(row.path)}</li>" for row in rows)
    return (
        f"<h2>Sheet {page}: rows {first} to {last}</h2>\n"
        f'<img alt="rows {first} to {last}" src="{sheet_name(page)}">\n'
        f'<ol start="{first}">\n{paths}\n</ol>'
    )


def labels_csv(rows: Sequence[Result]) -> str:
    """`path,label,predicted,source` in the sheets' order: each label the prediction (blank
    for an untrusted row), marked as the model's guess."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # "\r\n" ends records: a `\r` or `\n` in a path gets quoted
    writer.writerow(("path", "label", "predicted", "source"))
    for row in rows:
        digit = row.digit if trusted(row) else ""
        writer.writerow((row.path, digit, digit, f"{GUESS}{row.model_version or 'unknown'}"))
    return buffer.getvalue()
