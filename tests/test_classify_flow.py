"""The classify-folder flow under Prefect's test harness: a bulk run with its summary artifact."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from markdown_it import MarkdownIt
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from typer.testing import CliRunner

from beam_jobs.classify import ClassifySummary
from beam_jobs.drift import NO_REFERENCE, Drift
from digitflow.evaluate import PredictionProfile
from digitflow.scans import write_scans
from flows.artifacts import markdown_text
from flows.classify_cli import register
from flows.classify_folder import SUMMARY_KEY, classify_folder, summary_markdown

IN_PROCESS = "--direct_running_mode=in_memory"

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def scans(mnist, tmp_path: Path) -> Path:
    """12 scans in mixed formats and one empty file."""
    folder = tmp_path / "scans"
    write_scans(mnist.x_test[:12], mnist.y_test[:12], folder, seed=2)
    (folder / "empty.png").write_bytes(b"")
    return folder


def test_flow_classifies_and_publishes_its_summary(trained_model_path, scans, tmp_path):
    output = tmp_path / "out" / "results.csv"

    state = classify_folder(
        str(scans),
        str(output),
        model=str(trained_model_path),
        beam_args=[IN_PROCESS],
        return_state=True,
    )

    assert state.is_completed(), state.message
    assert state.name == "Completed with errors (1)"
    summary = state.result()
    assert (summary.matched, summary.classified, summary.failed, summary.ignored) == (14, 12, 1, 1)
    assert output.is_file()
    assert (tmp_path / "out" / "results.errors.csv").read_text().splitlines()[1:] == [
        f"{scans / 'empty.png'},empty file"
    ]
    run_filter = ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
    )
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=run_filter)
    assert artifact.key == SUMMARY_KEY
    assert "# Bulk classification: 12 of 13 images" in artifact.data
    model = markdown_text(str(trained_model_path))
    assert f"| model | {summary.model_version} ({model}) |" in artifact.data
    assert f"| drift | {NO_REFERENCE} |" in artifact.data  # a .keras file has no reference
    assert "## Errors (first 1 of 1)" in artifact.data
    assert f"| {markdown_text(str(scans / 'empty.png'))} | empty file |" in artifact.data


def test_flow_without_bad_files_ends_plainly_completed(trained_model_path, mnist, tmp_path):
    write_scans(mnist.x_test[:3], mnist.y_test[:3], tmp_path / "good", seed=4)

    state = classify_folder(
        str(tmp_path / "good"),
        str(tmp_path / "results.csv"),
        model=str(trained_model_path),
        beam_args=[IN_PROCESS],
        return_state=True,
    )

    assert (state.type, state.name) == (StateType.COMPLETED, "Completed")
    assert state.result().classified == 3


def test_artifact_shows_awkward_error_paths_as_plain_table_cells():
    no_drift = Drift(NO_REFERENCE, PredictionProfile.from_counts([0] * 10, 0.0, 0))
    summary = ClassifySummary(
        "in", "r.csv", "r.errors.csv", "v1", "m.keras", 2, 0, 2, 0, 0, 1.0, no_drift
    )
    errors = [("a|b*c.png", "empty file"), ("line\nbreak.png", "blank: no ink found")]

    markdown = summary_markdown(summary, errors)

    assert markdown.endswith(
        "| file | reason |\n| --- | --- |\n"
        "| a\\|b\\*c.png | empty file |\n| line break.png | blank: no ink found |\n"
    )


def table_rows(markdown: str) -> list[list[str]]:
    """Every table row as rendered by CommonMark with GFM tables: its cells' text.

    Fails on any raw HTML in the markdown."""
    rows: list[list[str]] = []
    row: list[str] | None = None
    for token in MarkdownIt("commonmark").enable("table").parse(markdown):
        children = token.children or []
        assert token.type != "html_block" and not [c for c in children if c.type == "html_inline"]
        if token.type == "tr_open":
            row = []
        elif token.type == "tr_close":
            rows.append(row)
            row = None
        elif token.type == "inline" and row is not None:
            row.append("".join(child.content for child in children))
    return rows


@pytest.mark.slow
def test_summary_shows_hostile_paths_as_plain_text_in_their_cells(model_file, mnist, tmp_path):
    hostile = tmp_path / "scans `x` | <img src=x onerror=alert(1)> _a_\nnext"
    source, output = hostile / "in", hostile / "results.csv"
    write_scans(mnist.x_test[:2], mnist.y_test[:2], source, seed=2)
    (source / "empty.png").write_bytes(b"")

    state = classify_folder(
        str(source), str(output), model=str(model_file), beam_args=[IN_PROCESS], return_state=True
    )

    run_filter = ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
    )
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=run_filter)
    rows = table_rows(artifact.data)
    assert {len(row) for row in rows} == {2}  # no row lost or gained a column
    cells = dict(row for row in rows if row[0] in ("input", "results", "errors file"))
    assert cells == {
        "input": str(source).replace("\n", " "),
        "results": str(output).replace("\n", " "),
        "errors file": str(hostile / "results.errors.csv").replace("\n", " "),
    }
    assert [str(source / "empty.png").replace("\n", " "), "empty file"] in rows


def test_cli_prefect_flag_runs_the_flow(trained_model_path, scans, tmp_path):
    app = typer.Typer()
    app.callback()(lambda: None)  # a command group, as in `digitflow`
    register(app)
    output = tmp_path / "results.csv"
    args = ["classify", str(scans), "-o", str(output), "--model", str(trained_model_path)]

    result = CliRunner().invoke(app, [*args, "--min-confidence", "0.9", "--prefect", IN_PROCESS])

    assert result.exit_code == 0, result.output
    assert "running flow classify-folder" in result.output
    assert "flow run state: Completed with errors (1)" in result.output
    assert "classified 12 (" in result.output
    assert output.is_file()
    with get_client(sync_client=True) as client:
        [flow_run] = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
    assert flow_run.parameters == {  # every option, flat, as the command line gave it
        "source": str(scans),
        "output": str(output),
        "model": str(trained_model_path),
        "store": None,
        "shards": 1,
        "min_confidence": 0.9,
        "overwrite": False,
        "drift_psi": 0.25,
        "drift_low_confidence_ratio": 3.0,
        "drift_min_images": 100,
        "max_file_mib": 64,
        "beam_args": [IN_PROCESS],
    }
