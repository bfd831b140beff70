"""The bulk classification's option sets (declared with `digitflow.options`).

`ClassifyOptions` is what a run reads and writes, with which model: the fields of
`digitflow classify`, of the `classify-folder` flow and of `python -m beam_jobs.classify`.
`Tuning` is the job's own tuning, parsed with Beam's options (`beam_jobs.classify.TuningOptions`)
so that it may come among them. Cheap to import (standard library only): the CLI reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from digitflow.config import LOW_CONFIDENCE
from digitflow.listing import MAX_FILE_MIB
from digitflow.options import check_bounds, option

STORE_HELP = "Model store (default: $DIGITFLOW_STORE or $DIGITFLOW_HOME/models)."
# CPU time per image by batch size (the first round's CNN, earlier host): 0.64 ms at 8, 0.48 at
# 64, 0.46 at 256, 0.42 at 1,024. From 256 on, larger batches save little and hold more images.
DEFAULT_BATCH_SIZE = 256


@dataclass(frozen=True)
class ClassifyOptions:
    """One bulk classification: what to read, where to write, with which model. A value
    outside its bounds is a ValueError (however the set was built: command, flow or code)."""

    source: str = option(
        help="Folder (searched recursively), glob, or gs:// / s3:// prefix.",
        argument=True,
        metavar="INPUT",
        flag="--input",
    )
    output: str = option(
        help="Results CSV; failures go to PATH.errors.csv.",
        cli=("--output", "-o"),
        metavar="PATH.csv",
    )
    model: str = option("production", help="Alias, version (7, v7) or a .keras file.")
    store: str | None = option(None, help=STORE_HELP, metavar="URI")
    shards: int = option(1, help="Write N result files (big jobs), each with a header.", min=1)
    min_confidence: float = option(
        LOW_CONFIDENCE, help="Rows below it get low_confidence=true.", min=0.0, max=1.0
    )
    overwrite: bool = option(False, help="Replace existing results and errors files.")
    drift_psi: float = option(
        0.25,
        help="Drift: highest population stability index of the predicted digits' mix "
        "against the model's reference profile.",
        min=0.0,
    )
    drift_low_confidence_ratio: float = option(
        3.0, help="Drift: highest low-confidence rate, as a multiple of the reference's.", min=0.0
    )
    drift_min_images: int = option(
        100, help="Drift: check only runs of at least N classified images.", min=1
    )
    max_file_mib: int = option(
        MAX_FILE_MIB, help="Files larger than N MiB are errors, refused unread.", min=1
    )

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass(frozen=True)
class Tuning:
    """How the job runs, not what it produces."""

    batch_size: int = option(DEFAULT_BATCH_SIZE, help="Images per predict.", min=1)
    progress_s: float = option(10.0, help="Seconds between progress lines in the log, per worker.")
