"""`digitflow review`: what a person needs to label a bulk run's low-confidence rows.

The core CLI imports this module at every start, so it stays cheap: the work (numpy, Pillow) is
in `model_store.spans.review`, imported inside the command; no TensorFlow, Beam or Prefect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from digitflow.config import LOW_CONFIDENCE
from digitflow.listing import MAX_FILE_MIB
from model_store.cli import MaxFileOption

console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `digitflow` app."""
    app.command("review")(review_command)


def review_command(
    results: Annotated[
        list[str],
        typer.Argument(
            metavar="RESULTS.csv",
            help="A bulk run's results CSV (local or gs:// s3://); give every shard of a run.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="A new or empty folder to write into, outside the scans' folder."
        ),
    ],
    below: Annotated[
        float, typer.Option(help="Review rows with a confidence below this.", min=0.0, max=1.0)
    ] = LOW_CONFIDENCE,
    limit: Annotated[
        int, typer.Option(help="At most N rows, the least confident (1,000 at most).")
    ] = 200,
    all_rows: Annotated[
        bool, typer.Option("--all", help="Every row, whatever its confidence.")
    ] = False,
    max_file_mib: MaxFileOption = MAX_FILE_MIB,
) -> None:
    """Lay out a bulk run's least confident rows for a person to label.

    OUT/contact-sheet-1.png, -2.png...: 120 tiles each: each scan as the model saw it and as
    scanned, row, digit, confidence.

    OUT/index.html: the sheets on one static page, with every row's full path.

    OUT/labels.csv: path,label,predicted,source in the sheets' order, each label prefilled
    with the prediction (blank where the results give no valid digit and confidence) and its
    source model:vN, the model's guess. A row counts as reviewed once its label differs from
    predicted or its source is anything else (person): edit wrong labels, set source to person
    where the label is right. Paths are absolute (a relative path in RESULTS.csv is relative
    to that file's folder).

    Then: digitflow data add OUT/labels.csv (it refuses rows still a model's guess, unless
    --accept-unreviewed: those train, never judge a model).
    """
    from model_store.spans.review import review
    from model_store.spans.review_rows import ReviewError

    threshold = None if all_rows else below
    try:
        written = review(results, out, threshold, limit, max_file_mib)
    except ReviewError as error:
        err_console.print(f"[red]error:[/] {escape(str(error))}")
        raise typer.Exit(1) from None
    which = "rows" if threshold is None else f"rows below confidence {threshold:g}"
    if not written.files:
        console.print(f"no {which} in {', '.join(results)}: nothing written", markup=False)
        return
    unreadable = f"; {written.unreadable:,} scans could not be read" if written.unreadable else ""
    unlabelled = (
        f"; {written.unlabelled:,} rows left unlabelled (no valid digit and confidence)"
        if written.unlabelled
        else ""
    )
    console.print(
        f"wrote {written.rows:,} of {written.matching:,} {which}, lowest confidence first"
        f"{unreadable}{unlabelled}:",
        markup=False,
    )
    for path in written.files:
        console.print(f"  {path}", markup=False)
    console.print(
        "correct the wrong labels, set source to person where the label is right, then: "
        f"digitflow data add {out / 'labels.csv'}",
        markup=False,
    )
