"""The `digitflow` command line.

TensorFlow is imported only inside the commands that need a model, so `--help` and the commands
that need none stay fast. Other packages add commands through the `digitflow.commands` entry-point
group (see pyproject.toml); the core never imports them.
"""

from __future__ import annotations

import json
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from digitflow import config, terminal
from digitflow.profiles import ARCHITECTURES, PROFILES

app = typer.Typer(
    help="Handwritten-digit recognition: MNIST data, training, evaluation and prediction.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(
    help="MNIST, sample scans, and labelled spans of your own scans.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
console = Console(soft_wrap=True)  # paths and numbers never broken across lines
err_console = Console(stderr=True, soft_wrap=True)

ModelPath = Annotated[Path, typer.Argument(help="A Keras .keras model file.")]


def default_model() -> Path:
    """Where `train` writes and `predict` reads when no path is given."""
    return config.home() / "model.keras"


def _load(path: Path):
    """The model at `path`, loaded in safe mode; one `error:` line and exit 1 if it cannot be."""
    from rich.markup import escape

    from digitflow.models import ModelLoadError, load_model

    if not path.is_file():
        err_console.print(f"[red]error:[/] no model file at {path}")
        raise typer.Exit(1)
    try:
        with console.status(f"loading {path}"):
            return load_model(path)
    except ModelLoadError as error:
        err_console.print(f"[red]error:[/] {escape(f'{path}: {error}')}", soft_wrap=True)
        raise typer.Exit(1) from None


def _load_mnist():
    from digitflow.data import DataError, load_mnist

    try:
        with console.status("loading MNIST"):
            return load_mnist()
    except DataError as error:
        err_console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None


@data_app.command("fetch")
def data_fetch() -> None:
    """Fill the local MNIST cache from the first source that works; print source and checksum."""
    from digitflow.data import CACHE_FILE

    mnist = _load_mnist()
    console.print(
        f"MNIST {len(mnist.x_train)} train / {len(mnist.x_test)} test images\n"
        f"source: {mnist.source}\nsha256: {mnist.checksum}\n"
        f"cache:  {config.data_dir() / CACHE_FILE}"
    )


@data_app.command("scans")
def data_scans(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the scans and labels.csv to.")],
    count: Annotated[int, typer.Option(min=1, max=10_000, help="How many test digits.")] = 100,
    seed: int = 0,
) -> None:
    """Render MNIST test digits as realistic scans (dark ink on paper, margins, mixed formats)."""
    from digitflow.scans import write_scans

    mnist = _load_mnist()
    labels_csv = write_scans(mnist.x_test[:count], mnist.y_test[:count], out_dir, seed=seed)
    console.print(f"wrote {count} scans and {labels_csv}")


@app.command()
def train(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to save the .keras model.")
    ] = None,
    arch: Annotated[str, typer.Option(help=f"One of: {', '.join(ARCHITECTURES)}.")] = "cnn",
    profile: Annotated[str, typer.Option(help=f"One of: {', '.join(PROFILES)}.")] = "fast",
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Override the profile's epochs.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Override the profile's seed.")] = None,
) -> None:
    """Train a model on MNIST and save it (default: $DIGITFLOW_HOME/model.keras)."""
    from digitflow.profiles import train_config

    try:
        settings = train_config(profile, architecture=arch, epochs=epochs, seed=seed)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    output = output or default_model()
    mnist = _load_mnist()
    from digitflow.train import train as run_training

    console.print(f"training {settings.architecture} ({settings.profile} profile): {settings}")
    result = run_training(mnist, settings, verbose=1 if sys.stdout.isatty() else 2)
    output.parent.mkdir(parents=True, exist_ok=True)
    result.model.save(output)
    val_accuracy = result.history["val_accuracy"]
    console.print(
        f"saved {output}: {result.epochs_run} epochs in {result.wall_seconds:.0f} s, "
        f"best validation accuracy {max(val_accuracy):.4f}"
    )


def _metrics_table(evaluation) -> Table:
    table = Table("digit", "precision", "recall", "support", title="Per-digit metrics")
    for m in evaluation.per_digit:
        table.add_row(str(m.digit), f"{m.precision:.4f}", f"{m.recall:.4f}", str(m.support))
    return table


@app.command()
def evaluate(
    model: ModelPath,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Evaluate a model on the MNIST test set."""
    from digitflow.evaluate import evaluate as run_evaluation

    keras_model = _load(model)
    mnist = _load_mnist()
    evaluation = run_evaluation(keras_model, mnist.x_test, mnist.y_test)
    if json_output:
        typer.echo(json.dumps({"model": str(model), **evaluation.to_dict(include_mistakes=False)}))
        return
    console.print(_metrics_table(evaluation))
    console.print(
        f"test accuracy {evaluation.accuracy:.4f}, loss {evaluation.loss:.4f} "
        f"({len(evaluation.mistakes)} of {evaluation.count} wrong)"
    )


@app.command()
def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (recursive).")],
    model: Annotated[
        Path | None, typer.Option(help="Model file (default: $DIGITFLOW_HOME/model.keras).")
    ] = None,
) -> None:
    """Classify images; one line per image. Exits 1 if any image could not be classified."""
    from digitflow.predict import Failure, image_files, predict_files

    files = list(image_files(str(path) for path in paths))
    if not files:
        err_console.print("[red]error:[/] no image files found")
        raise typer.Exit(1)
    results = predict_files(_load(model or default_model()), files)
    for r in results:
        if isinstance(r, Failure):
            typer.echo(f"{r.path}: error: {r.error}")
        else:
            typer.echo(f"{r.path}: {r.digit} (confidence {r.confidence:.3f})")
    if any(isinstance(r, Failure) for r in results):
        raise typer.Exit(1)


@app.command()
def report(
    model: ModelPath,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG to write.")] = Path(
        "report.png"
    ),
) -> None:
    """Draw correct and wrong test predictions and the confusion matrix into a PNG."""
    from digitflow.evaluate import evaluate as run_evaluation
    from digitflow.report import render_report

    keras_model = _load(model)
    mnist = _load_mnist()
    evaluation = run_evaluation(keras_model, mnist.x_test, mnist.y_test)
    title = f"{model.name}: test accuracy {evaluation.accuracy:.4f} on {evaluation.count} images"
    image = render_report(mnist.x_test, mnist.y_test, evaluation, title)
    output.parent.mkdir(parents=True, exist_ok=True)
    image.save(output)
    console.print(f"wrote {output}")


def main() -> None:
    """Console-script entry point: a quiet terminal, logging, plugin commands, then the app."""
    terminal.quiet_startup()
    logger = logging.getLogger("digitflow")
    logger.setLevel(logging.INFO)
    logger.addHandler(terminal.log_handler())
    logger.propagate = False  # Prefect's root handlers would print every line again
    for entry_point in entry_points(group="digitflow.commands"):
        try:
            entry_point.load()(app)
        except ImportError as error:  # a broken plugin must not take the core commands down
            err_console.print(f"[yellow]warning:[/] commands from {entry_point.value}: {error}")
    with terminal.interrupt_is_one_line():
        app()
