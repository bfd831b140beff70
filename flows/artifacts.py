"""What a retrain run shows in the Prefect UI: the report, a per-digit table, the nightly history.

The keys are stable: the UI's Artifacts page keeps each key's history, one version per run.
The builders are plain functions of the run's results and the store's records; `publish` sends
them to Prefect. Every string from outside the code (paths, names, reasons) goes into markdown
through `markdown_text`, so a folder name cannot break a table or add markup.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

from digitflow.evaluate import Evaluation
from flows.gate import Baseline, Decision, Scores, Thresholds
from model_store import HistoryEntry, ModelVersion
from model_store.refs import label

REPORT_KEY = "retrain-report"
PER_DIGIT_KEY = "retrain-per-digit"
HISTORY_KEY = "retrain-history"
PROGRESS_KEY = "retrain-progress"
HISTORY_ROWS = 60  # nights shown in the history table, newest first
# Markdown's markup characters; `_` only at the edge of a word (within one it is literal).
_MARKUP = re.compile(r"[\\`*\[\]<>|~]|_(?![^\W_])|(?<![^\W_])_")


@dataclass(frozen=True)
class RunSummary:
    """Everything the report says about one run."""

    candidate_version: int
    candidate_uri: str
    candidate: Scores
    baseline: Baseline | None  # what the gate compared with; None: no production model
    decision: Decision
    promoted: bool  # the outcome: the gate passed *and* the compare-and-swap won
    after: int | None  # where `alias` points after the run
    outcome: str  # the run's one-line outcome, the gate's reason or why promotion failed
    thresholds: Thresholds
    alias: str
    store_root: str
    training: str  # one line: how the candidate was trained, or that it was not retrained
    spans: tuple[str, ...]  # the labelled spans whose train images the candidate learned from
    report_image: Path


def markdown_text(text: str) -> str:
    """`text` as literal markdown text, fit for a table cell: markup characters backslash-escaped
    (so no HTML, link, code or `|` column break), line breaks as spaces."""
    return _MARKUP.sub(lambda found: "\\" + found.group(0), re.sub(r"[\r\n]", " ", text))


def _metrics(scores: Scores) -> dict[str, str]:
    evaluation, holdout, suite = scores.test, scores.holdout, scores.robustness
    measured = [m for m in evaluation.per_digit if m.support > 0]
    worst = min(measured, key=lambda m: m.recall, default=None)
    return {
        "MNIST test accuracy": f"{evaluation.accuracy:.4f}",
        "own-scans holdout accuracy": "-" if holdout is None else f"{holdout.accuracy:.4f}",
        "own-scans holdout images": "0" if holdout is None else str(holdout.count),
        "real-scan robustness accuracy": "-" if suite is None else f"{suite.accuracy:.4f}",
        "real-scan robustness images": "0" if suite is None else str(suite.count),
        "test loss": f"{evaluation.loss:.4f}",
        "lowest digit recall": f"{worst.recall:.4f} (digit {worst.digit})" if worst else "-",
        "wrong predictions": str(len(evaluation.mistakes)),
        "test images": str(evaluation.count),
    }


def _robustness_section(summary: RunSummary, column: str) -> list[str]:
    """The candidate's and the baseline's accuracy per style on the robustness suite."""
    ours = summary.candidate.robustness
    if ours is None:
        return []
    baseline = summary.baseline
    theirs = {}
    if baseline is not None and baseline.scores is not None and baseline.scores.robustness:
        theirs = {s: f"{a:.4f}" for s, a in baseline.scores.robustness.per_style.items()}
    return [
        "## Real-scan robustness",
        "",
        "Accuracy per style on MNIST test digits rendered as real scans, photos and files, "
        "read through `to_mnist` as the bulk job reads images.",
        "",
        f"| style | candidate v{summary.candidate_version} | {column} |",
        "| --- | --- | --- |",
        *(
            f"| {markdown_text(style)} | {accuracy:.4f} | {theirs.get(style, '-')} |"
            for style, accuracy in ours.per_style.items()
        ),
        "",
    ]


def _baseline_column(baseline: Baseline | None, alias: str) -> str:
    """The report's heading for the model the candidate was compared with."""
    if baseline is None or baseline.version is None:
        return "no model to compare with"
    if baseline.name == alias:
        return f"{alias} {label(baseline.version)}"
    return f"compared with {label(baseline.version)}"


def inline_png(path: Path, alt: str) -> str:
    """Markdown for a PNG embedded as a data URI: it renders in the UI on any host."""
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{encoded})"


def report_markdown(summary: RunSummary) -> str:
    """The run's report: outcome first, then candidate vs production, checks, image, where."""
    thresholds = summary.thresholds
    verdict = "PROMOTED" if summary.promoted else "NOT PROMOTED"
    ours = _metrics(summary.candidate)
    baseline = summary.baseline
    theirs = {} if baseline is None or baseline.scores is None else _metrics(baseline.scores)
    column = markdown_text(_baseline_column(baseline, summary.alias))
    rule = [] if baseline is None or baseline.rule is None else [markdown_text(baseline.rule), ""]
    lines = [
        f"# Retrain: v{summary.candidate_version} {verdict}",
        "",
        f"**Decision:** {markdown_text(summary.outcome)}",
        "",
        *rule,
        f"| metric | candidate v{summary.candidate_version} | {column} |",
        "| --- | --- | --- |",
        *(f"| {name} | {value} | {theirs.get(name, '-')} |" for name, value in ours.items()),
        "",
        "## Gate",
        "",
        "| check | result | detail |",
        "| --- | --- | --- |",
        *(
            f"| {markdown_text(check.name)} | {'pass' if check.passed else 'FAIL'} "
            f"| {markdown_text(check.detail)} |"
            for check in summary.decision.checks
        ),
        "",
        f"Thresholds: accuracy >= {thresholds.min_accuracy}, regression <= "
        f"{thresholds.max_regression}, every digit's recall >= {thresholds.min_digit_recall}, "
        f"own-scans holdout regression <= {thresholds.holdout_tolerance} from "
        f"{thresholds.min_holdout} images, real-scan robustness regression <= "
        f"{thresholds.robustness_tolerance}.",
        "",
        *_robustness_section(summary, column),
        "## Predictions",
        "",
        inline_png(summary.report_image, f"v{summary.candidate_version} report"),
        "",
        "## Model",
        "",
        f"- candidate: v{summary.candidate_version} at {markdown_text(summary.candidate_uri)}",
        f"- {markdown_text(summary.alias)} after this run: {label(summary.after)}",
        f"- store: {markdown_text(summary.store_root)}",
        f"- training: {markdown_text(summary.training)}",
        f"- trained on: MNIST + {markdown_text(spans_text(summary.spans))}",
        f"- report image file: {markdown_text(str(summary.report_image))} (on the host that ran "
        "the flow)",
    ]
    return "\n".join(lines) + "\n"


def spans_text(spans: tuple[str, ...] | list[str]) -> str:
    """`spans a, b`, or `no spans`."""
    return f"spans {', '.join(spans)}" if spans else "no spans"


def per_digit_rows(
    candidate: Evaluation, production: Evaluation | None, holdout: Evaluation | None = None
) -> list[dict]:
    """One row per digit: candidate precision and recall on MNIST's test set, production's
    next to them, then the candidate's recall on the own-scans holdout when there is one."""
    rows = []
    for ours in candidate.per_digit:
        row = {
            "digit": ours.digit,
            "support": ours.support,
            "precision": round(ours.precision, 4),
            "recall": round(ours.recall, 4),
        }
        if production is not None:
            theirs = production.per_digit[ours.digit]
            row["production precision"] = round(theirs.precision, 4)
            row["production recall"] = round(theirs.recall, 4)
        if holdout is not None:
            scans = holdout.per_digit[ours.digit]
            row["own-scans support"] = scans.support
            row["own-scans recall"] = round(scans.recall, 4) if scans.support else "-"
        rows.append(row)
    return rows


def _rounded(value: float | None) -> float | str:
    return "-" if value is None else round(value, 4)


def history_rows(
    versions: list[ModelVersion], changes: list[HistoryEntry], alias: str
) -> list[dict]:
    """One row per version, newest first: what each night trained and what `alias` became.

    `alias` after a version is the target of the last change to it before the next version
    was registered, so hand promotions and rollbacks in between show too.
    """
    ordered = sorted(versions, key=lambda v: v.version)
    moves = [change for change in changes if change.alias == alias]
    rows = []
    for index, version in enumerate(ordered):
        until = ordered[index + 1].created_at if index + 1 < len(ordered) else None
        before = [m for m in moves if until is None or m.at < until]
        card = version.card
        lowest = card.metrics.lowest_recall()
        suite = card.robustness
        rows.append(
            {
                "date": version.created_at.replace("T", " ")[:16],
                "version": label(version.version),
                "MNIST accuracy": _rounded(card.metrics.accuracy),
                "own-scans accuracy": _rounded(card.holdout_accuracy),
                "robustness accuracy": _rounded(None if suite is None else suite.accuracy),
                "lowest digit recall": _rounded(None if lowest is None else lowest[1]),
                "spans": ", ".join(card.span_names) or "-",
                "decision": card.outcome,
                f"{alias} after": label(before[-1].to_version if before else None),
            }
        )
    return rows[::-1][:HISTORY_ROWS]


def publish_unchanged(message: str) -> None:
    """The report of a run that found nothing new to train: why, in one line."""
    from prefect.artifacts import create_markdown_artifact

    decision = markdown_text(message)
    text = f"# Retrain: UNCHANGED\n\n**Decision:** {decision}; nothing trained or registered.\n"
    create_markdown_artifact(text, key=REPORT_KEY, description=decision)


def publish(summary: RunSummary, history: list[dict]) -> None:
    """Create the run's artifacts under their stable keys."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    version = label(summary.candidate_version)
    create_markdown_artifact(
        report_markdown(summary),
        key=REPORT_KEY,
        description=f"Candidate {version}: {markdown_text(summary.outcome)}",
    )
    baseline = None if summary.baseline is None else summary.baseline.scores
    create_table_artifact(
        per_digit_rows(
            summary.candidate.test,
            None if baseline is None else baseline.test,
            summary.candidate.holdout,
        ),
        key=PER_DIGIT_KEY,
        description=f"Per-digit precision and recall of candidate {version} on the test set, "
        "and its recall on the own-scans holdout",
    )
    create_table_artifact(
        history,
        key=HISTORY_KEY,
        description="Every retrained version, newest first, and where "
        f"{markdown_text(summary.alias)} went",
    )
