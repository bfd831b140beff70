"""`digitflow models ...` end to end, and how `predict`/`evaluate` report a model file they
cannot load: the installed console script, in real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from model_store import ModelStore

DIGITFLOW = Path(sys.executable).with_name("digitflow")


@pytest.fixture
def store(digitflow_home: Path, model_file: Path) -> ModelStore:
    """The default store ($DIGITFLOW_HOME/models) with v1 in production and v2 registered."""
    store = ModelStore()
    store.register(model_file, {"metrics": {"accuracy": 0.9712}})
    store.register(model_file, {"metrics": {"accuracy": 0.9803}})
    store.promote(1, reason="first", actor="test")
    return store


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model with the right shapes and a Python lambda, which safe mode refuses to load."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(),
            keras.layers.Lambda(lambda x: x / 2),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    path = tmp_path_factory.mktemp("lambda") / "lambda.keras"
    model.save(path)
    return path


def digitflow(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `digitflow ARGS...`."""
    return subprocess.run(
        [str(DIGITFLOW), *map(str, args)], capture_output=True, text=True, timeout=180, env=env
    )


def models(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `digitflow models ARGS...`."""
    return digitflow("models", *args, env=env)


def json_of(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


def command_importing(*argv: object) -> tuple[str, list[str]]:
    """`digitflow ARGV...` through the console script's own entry point, every plugin command
    loaded, in a fresh interpreter: its output, and which of TensorFlow, Keras and Beam it
    imported."""
    probe = (
        "import json, sys\n"
        "from digitflow.cli import main\n"
        f"sys.argv = ['digitflow', *{list(map(str, argv))!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as done:\n"
        "    assert not done.code, done.code\n"
        "heavy = ('tensorflow', 'keras', 'apache_beam')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    *output, imported = done.stdout.splitlines()
    return "\n".join(output), json.loads(imported)


def models_importing(*args: object) -> tuple[str, list[str]]:
    """`digitflow models ARGS...`, as `command_importing` runs it."""
    return command_importing("models", *args)


def test_register_promote_rollback_history(
    digitflow_home: Path, tmp_path: Path, model_file: Path
) -> None:
    metrics = tmp_path / "evaluation.json"  # what `digitflow evaluate MODEL --json` prints
    metrics.write_text(json.dumps({"model": "out/model.keras", "accuracy": 0.97, "loss": 0.1}))

    first = json_of(models("register", model_file, "--metrics-json", metrics, "--json"))
    assert (first["version"], first["metrics"], first["aliases"]) == (
        1,
        {"accuracy": 0.97, "loss": 0.1},
        [],
    )
    second = json_of(models("register", model_file, "--reason", "by hand", "--json"))
    assert second["version"] == 2 and second["metadata"]["reason"] == "by hand"

    assert json_of(models("promote", "1", "--json"))["to"] == 1
    change = json_of(models("promote", "v2", "--expected", "v1", "--reason", "gate", "--json"))
    assert (change["from"], change["to"], change["reason"]) == (1, 2, "gate")
    assert models("promote", "1", "--alias", "canary").returncode == 0

    listed = json_of(models("list", "--json"))
    assert [(v["version"], v["aliases"]) for v in listed] == [(1, ["canary"]), (2, ["production"])]
    assert listed[0]["created_at"] and listed[0]["metrics"]["accuracy"] == 0.97

    back = json_of(models("rollback", "--reason", "7s misread", "--json"))
    assert (back["from"], back["to"], back["reason"]) == (2, 1, "7s misread")
    assert json_of(models("show", "production", "--json"))["version"] == 1

    history = json_of(models("history", "--json"))
    assert [(h["alias"], h["from"], h["to"]) for h in history] == [
        ("production", None, 1),
        ("production", 1, 2),
        ("canary", None, 1),
        ("production", 2, 1),
    ]
    assert all(h["at"] and h["actor"].startswith("cli:") for h in history)
    assert len(json_of(models("history", "--alias", "canary", "--json"))) == 1


def test_tables(store: ModelStore) -> None:
    listed = models("list")
    assert listed.returncode == 0, listed.stderr
    rows = [line for line in listed.stdout.splitlines() if "v1" in line or "v2" in line]
    assert "0.9712" in rows[0] and "production" in rows[0]
    assert "0.9803" in rows[1] and "production" not in rows[1]

    shown = models("show", "production")
    assert shown.returncode == 0 and '"accuracy": 0.9712' in shown.stdout

    history = models("history")
    assert history.returncode == 0 and "first" in history.stdout


def test_conflict_exits_2_and_changes_nothing(store: ModelStore) -> None:
    done = models("promote", "2", "--expected", "none")
    assert done.returncode == 2
    assert error_lines(done) == [
        "error: production points to v1, not the expected none; nothing changed"
    ]
    assert store.aliases() == {"production": 1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "../1"], "invalid reference '../1'"),
        (["show", "staging"], "unknown alias 'staging'"),
        (["promote", "9"], "version v9 does not exist"),
        (["promote", "2", "--alias", "../prod"], "invalid alias '../prod'"),
        (["rollback"], "production has no previous version"),
        (["register", "missing.keras"], "model file not found"),
        (["list", "--store", "hdfs://digitflow-test/models"], "unsupported store URI hdfs://"),
        (["show", "v0"], "error: version v0 does not exist: versions are numbered from 1"),
        (
            ["show", "v99999999999"],
            "error: version v99999999999 does not exist: versions stop at 999,999,999",
        ),
    ],
)
def test_errors_are_one_line_and_exit_1(store: ModelStore, args: list[str], message: str) -> None:
    done = models(*args)
    assert done.returncode == 1
    [line] = error_lines(done)
    assert message in line
    assert store.aliases() == {"production": 1} and len(store.list_versions()) == 2


def test_store_location_from_option_and_environment(
    store: ModelStore, tmp_path: Path, model_file: Path
) -> None:
    other = tmp_path / "other-store"
    assert json_of(models("register", model_file, "--store", other, "--json"))["version"] == 1
    env = {**os.environ, "DIGITFLOW_STORE": str(other)}
    assert [v["aliases"] for v in json_of(models("list", "--json", env=env))] == [[]]
    assert len(json_of(models("list", "--json"))) == 2  # the default store is untouched


def test_models_commands_stay_import_cheap(store: ModelStore) -> None:
    heavy = ("tensorflow", "keras", "apache_beam", "numpy", "boto3", "google.cloud.storage")
    probe = f"import sys, model_store.cli; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr


@pytest.mark.parametrize("command", [["list"], ["show", "production"], ["history"]])
def test_store_commands_import_no_tensorflow(store: ModelStore, command: list[str]) -> None:
    assert models_importing(*command)[1] == []


def test_register_refuses_a_model_safe_mode_cannot_load(
    store: ModelStore, lambda_model: Path
) -> None:
    done = models("register", lambda_model)
    assert done.returncode == 1
    [line] = error_lines(done)
    assert line.startswith(f"error: {lambda_model}: refused: Keras could not load the model (")
    assert "safe_mode" in line and "Traceback" not in done.stderr
    assert [v.version for v in store.list_versions()] == [1, 2]
    assert not (Path(store.root) / "versions" / "3").exists()


def test_list_shows_a_corrupt_version_and_the_rest(store: ModelStore) -> None:
    store.promote(2, alias="canary", reason="try", actor="test")
    (Path(store.root) / "versions" / "2" / "metadata.json").write_text('{"version": 2, "metr')

    listed = models("list")
    assert listed.returncode == 0, listed.stderr
    rows = [line for line in listed.stdout.splitlines() if "v1" in line or "v2" in line]
    assert "0.9712" in rows[0] and "production" in rows[0]
    assert "corrupt" in rows[1] and "canary" in rows[1]
    [warning] = [line for line in listed.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith("warning: v2: metadata.json is not valid JSON")

    as_json = json_of(models("list", "--json"))
    assert as_json[0]["version"] == 1 and as_json[0]["metrics"]["accuracy"] == 0.9712
    assert as_json[1]["version"] == 2 and as_json[1]["aliases"] == ["canary"]
    assert as_json[1]["problem"].startswith("v2: metadata.json is not valid JSON")


def test_history_skips_a_torn_last_line_with_a_warning(store: ModelStore) -> None:
    with (Path(store.root) / "history.jsonl").open("ab") as fh:
        fh.write(b'{"alias": "production", "from": 1, "to"')

    done = models("history", "--json")
    assert [(h["from"], h["to"]) for h in json_of(done)] == [(None, 1)]
    [warning] = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith("warning: history entry 2 (the last, probably cut short by a crash)")
    assert models("promote", "2", "--expected", "v1").returncode == 0
    assert [(h["from"], h["to"]) for h in json_of(models("history", "--json"))] == [
        (None, 1),
        (1, 2),
    ]


@pytest.mark.parametrize("alias", ["none", "any"])
def test_reserved_alias_names_are_refused(store: ModelStore, alias: str) -> None:
    done = models("promote", "2", "--alias", alias)
    assert done.returncode == 1
    assert error_lines(done) == [f"error: invalid alias '{alias}': any, none are reserved words"]
    assert store.aliases() == {"production": 1}


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_model_file_keras_cannot_load_is_one_error_line(
    tmp_path: Path, lambda_model: Path, command: str
) -> None:
    from PIL import Image

    image = tmp_path / "seven.png"
    Image.new("L", (28, 28), 0).save(image)
    args = [image, "--model", lambda_model] if command == "predict" else [lambda_model]

    done = digitflow(command, *args)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {lambda_model}: Keras could not load the model (")
    assert "safe_mode" in line


@pytest.mark.parametrize(
    "command", [["models", "list"], ["models", "show", "1"], ["data", "list"], ["data", "add", "x"]]
)
def test_a_store_path_that_is_a_file_is_refused(tmp_path: Path, command: list[str]) -> None:
    not_a_store = tmp_path / "store.txt"
    not_a_store.write_text("not a store\n")

    done = digitflow(*command, "--store", not_a_store)

    assert done.returncode == 1, done.stdout
    assert error_lines(done) == [f"error: store root {not_a_store} is not a directory"]
    assert "Traceback" not in done.stderr and not_a_store.read_text() == "not a store\n"


def test_an_alias_record_with_a_bool_for_a_version_is_corrupt(store: ModelStore) -> None:
    aliases = Path(store.root) / "aliases.json"
    aliases.write_text(json.dumps({"production": {"version": True, "previous": []}}))

    for args in (["show", "production"], ["list"]):
        done = models(*args)
        assert done.returncode == 1, done.stdout
        assert error_lines(done) == [f"error: {aliases} is corrupt"]


BAD_METRICS = [
    ('{"accuracy": 0.9, "recall": [0.9, 0.8]}', "recall must be an object keyed by digit 0-9"),
    ('{"accuracy": 7}', "accuracy must be a number in [0, 1], got 7"),
    ('{"accuracy": "0.9"}', "accuracy must be a number in [0, 1], got '0.9'"),
]


@pytest.mark.parametrize(("metrics", "problem"), BAD_METRICS)
def test_register_refuses_bad_metrics_in_one_line(
    store: ModelStore, tmp_path: Path, model_file: Path, metrics: str, problem: str
) -> None:
    as_file = tmp_path / "metrics.json"
    as_file.write_text(metrics)

    for option, where in ((as_file, f"--metrics-json {as_file}"), (metrics, "--metrics-json")):
        done = models("register", model_file, "--metrics-json", option)

        assert done.returncode == 1, done.stdout
        assert "Traceback" not in done.stderr and done.stdout == ""
        [line] = error_lines(done)
        assert line.startswith(f"error: {where}: {problem}"), line
    assert [v.version for v in store.list_versions()] == [1, 2]
    assert not (Path(store.root) / "versions" / "3").exists()


def test_register_refuses_out_of_range_accuracy_as_the_issue_shows(
    store: ModelStore, model_file: Path
) -> None:
    done = models("register", model_file, "--metrics-json", '{"accuracy": 7}')

    assert done.returncode == 1
    assert error_lines(done) == [
        "error: --metrics-json: accuracy must be a number in [0, 1], got 7"
    ]
    assert len(store.list_versions()) == 2


def test_register_takes_evaluate_json_as_it_prints_it(
    store: ModelStore, tmp_path: Path, model_file: Path
) -> None:
    evaluated = digitflow("evaluate", model_file, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = tmp_path / "evaluation.json"
    report.write_text(evaluated.stdout)

    registered = json_of(models("register", model_file, "--metrics-json", report, "--json"))

    printed = json.loads(evaluated.stdout)
    metrics = registered["metrics"]
    assert metrics["accuracy"] == printed["accuracy"] and metrics["count"] == printed["count"]
    assert metrics["recall"] == {str(d["digit"]): d["recall"] for d in printed["per_digit"]}
    assert metrics["support"] == {str(d["digit"]): d["support"] for d in printed["per_digit"]}
    assert metrics["confusion"] == printed["confusion"] and "model" not in metrics
    assert ModelStore().get(3).card.reference is None  # a profile in metrics is not a reference


def hand_written_version(store: ModelStore, model_file: Path, number: int, record: dict) -> Path:
    """A version folder as an earlier release left it, metadata.json written by hand."""
    from digitflow.locations import sha256_file

    directory = Path(store.root) / "versions" / str(number)
    directory.mkdir(parents=True)
    (directory / "model.keras").write_bytes(model_file.read_bytes())
    full = {**record, "version": number, "model_sha256": sha256_file(directory / "model.keras")}
    (directory / "metadata.json").write_text(json.dumps(full))
    return directory / "metadata.json"


# What the nightly flow wrote from 34e9d61 on: no schema_version, metrics' count as test_images.
OLD_FLOW_RECORD = {
    "created_at": "2025-01-31T02:00:00+00:00",
    "code_version": None,
    "library_versions": {"keras": "3.8.0"},
    "metrics": {
        "accuracy": 0.9935,
        "loss": 0.021,
        "test_images": 10000,
        "recall": {str(d): 0.99 for d in range(10)},
    },
    "params": {"profile": "fast"},
    "architecture": "cnn",
    "dataset_checksum": "sha256:abc",
    "flow_run_id": "run-2",
    "identity": "e" * 64,
    "spans": {"names": ["a"], "checksum": "d", "train_images": 8, "holdout_images": 2},
    "holdout": {"candidate": {"accuracy": 1.0, "count": 2}, "production": None},
    "gate": {"promote": True, "reason": "passed", "checks": [], "thresholds": {}},
}


def test_old_metadata_loads_lists_and_shows(store: ModelStore, model_file: Path) -> None:
    hand_written_version(store, model_file, 3, OLD_FLOW_RECORD)

    listed = models("list")
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if "v3" in line]
    assert "0.9935" in row and not listed.stderr
    shown = json_of(models("show", "3", "--json"))["metadata"]
    assert len(shown.pop("model_sha256")) == 64
    assert shown == {**OLD_FLOW_RECORD, "version": 3}  # shown as written, nothing rewritten
    assert models("promote", "3").returncode == 0


def test_a_string_accuracy_on_disk_is_a_warning_row_not_a_crash(
    store: ModelStore, model_file: Path
) -> None:
    store.promote(2, alias="canary", reason="try", actor="test")
    path = Path(store.root) / "versions" / "2" / "metadata.json"
    record = json.loads(path.read_text())
    record["metrics"]["accuracy"] = "0.9803"  # as `register` accepted it before the card
    path.write_text(json.dumps(record))

    listed = models("list")
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    rows = [line for line in listed.stdout.splitlines() if "v1" in line or "v2" in line]
    assert "0.9712" in rows[0] and "production" in rows[0]
    assert "corrupt" in rows[1] and "canary" in rows[1]
    [warning] = [line for line in listed.stderr.splitlines() if line.startswith("warning:")]
    assert warning == (
        "warning: v2: metadata.json is corrupt: metrics.accuracy must be a number in [0, 1], "
        "got '0.9803'"
    )
    as_json = json_of(models("list", "--json"))
    assert as_json[1]["problem"].startswith("v2: metadata.json is corrupt: metrics.accuracy")

    shown = models("show", "2")
    assert shown.returncode == 1 and "Traceback" not in shown.stderr
    assert error_lines(shown) == [f"error: {warning.removeprefix('warning: ')}"]
    assert models("show", "1").returncode == 0
