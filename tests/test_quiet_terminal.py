"""A quiet terminal on every host: what TensorFlow, absl, LiteRT, Keras and Beam's workers print
natively never reaches the user, whichever CPU the host has.

Each test runs twice: with TensorFlow's oneDNN notice forced on (what hosts with AVX-512 print)
and forced off (hosts with AVX2 only), through `TF_ENABLE_ONEDNN_OPTS`, and first checks that
the forced notice really is printed by a bare `import tensorflow`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digitflow.data import Mnist
from digitflow.scans import write_scans

BIN = Path(sys.executable).parent
ONEDNN_NOTICE = "oneDNN custom operations are on"
# What the libraries print natively on the hosts we have seen, and their log formats in general.
NOISE = re.compile(
    r"oneDNN|cuInit|cuda|absl|XNNPACK|TensorFlow Lite|rebuild TensorFlow|Downloading data from"
    r"|^[IWEF]\d{4} |^(INFO|WARNING|ERROR|DEBUG):|Traceback|sdk_worker|Worker:",
    re.MULTILINE,
)
# digitflow's own log lines: `13:44:10.364 | INFO    | beam_jobs.classify - classifying ...`.
OWN_LOG_LINE = re.compile(r"\d\d:\d\d:\d\d\.\d{3} \| INFO    \| beam_jobs\.[\w.]+ - ")


@pytest.fixture(params=["1", "0"], ids=["onednn-notice-on", "onednn-notice-off"])
def host_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment of a host that prints TensorFlow's oneDNN notice, or of one that does not."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": request.param}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    bare = subprocess.run(
        [BIN / "python", "-c", "import tensorflow"], capture_output=True, text=True, env=env
    )
    assert (ONEDNN_NOTICE in bare.stderr) == (request.param == "1"), bare.stderr
    return env


def digitflow(*args: object, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "digitflow", *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `.keras` file that safe-mode loading refuses (its Lambda layer holds a lambda)."""
    import keras

    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Lambda(lambda x: x * 2)])
    path = tmp_path_factory.mktemp("lambda") / "lambda.keras"
    model.save(path)
    return path


@pytest.fixture
def scans(mnist: Mnist, tmp_path: Path) -> Path:
    """40 realistic scans and one corrupt file."""
    folder = tmp_path / "scans"
    write_scans(mnist.x_test[:40], mnist.y_test[:40], folder, seed=2)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    return folder


def test_a_failing_command_prints_its_error_line_and_nothing_else(
    host_env: dict[str, str], lambda_model: Path
) -> None:
    done = digitflow("evaluate", lambda_model, env=host_env)

    assert done.returncode == 1 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(
        f"error: {lambda_model}: Keras could not load the model (Requested the deserialization "
        "of a `Lambda` layer"
    ), done.stderr


def test_models_register_prints_only_its_result(host_env: dict[str, str], model_file: Path) -> None:
    done = digitflow("models", "register", model_file, env=host_env)

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("registered v1")


# Worker processes take seconds to start: the multi-process runs are `slow` (`make test` only).
MODES = ["in_memory", pytest.param("multi_processing", marks=pytest.mark.slow)]


@pytest.mark.parametrize("mode", MODES)
def test_classify_prints_only_its_own_lines(
    host_env: dict[str, str], model_file: Path, scans: Path, tmp_path: Path, mode: str
) -> None:
    output = tmp_path / "out" / "results.csv"
    beam = [f"--direct_running_mode={mode}", "--progress_s=0"]
    beam += ["--direct_num_workers=2"] * (mode == "multi_processing")
    done = digitflow("classify", scans, "-o", output, "--model", model_file, *beam, env=host_env)

    assert done.returncode == 0, done.stderr
    assert not NOISE.search(done.stderr), done.stderr
    lines = done.stderr.splitlines()
    assert all(OWN_LOG_LINE.match(line) for line in lines), done.stderr
    assert any("progress: " in line for line in lines)  # the workers' own lines still come
    assert "classified 40" in done.stdout and "errors 1" in done.stdout


@pytest.mark.slow
def test_retrain_prints_no_library_noise(host_env: dict[str, str]) -> None:
    quick = ["--arch=mlp", "--epochs=1", "--train-limit=3000", "--test-limit=1000"]
    floors = ["--min-accuracy=0.5", "--min-digit-recall=0.3"]
    done = digitflow("retrain", "--profile=fast", *quick, *floors, env=host_env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert not NOISE.search(done.stdout + done.stderr), done.stdout + done.stderr
    assert "promoted" in done.stdout.splitlines()[-1]


@pytest.mark.slow  # 1,000 scans rendered, a job started and interrupted
@pytest.mark.parametrize("mode", ["in_memory", "multi_processing"])
def test_ctrl_c_is_one_line_exit_130_and_leaves_no_temp_folders(
    model_file: Path, mnist: Mnist, tmp_path: Path, mode: str
) -> None:
    folder = tmp_path / "scans"
    write_scans(mnist.x_test[:1000], mnist.y_test[:1000], folder, seed=3)
    out = tmp_path / "out"
    command = [BIN / "digitflow", "classify", folder, "-o", out / "results.csv"]
    command += ["--model", model_file, f"--direct_running_mode={mode}"]
    command += ["--direct_num_workers=2"] * (mode == "multi_processing")
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1"}
    job = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True
    )
    assert job.stderr is not None
    start = job.stderr.readline()  # the job is launching: its workers, its first bundles
    time.sleep(0.5)  # well short of the 1,000 images' decoding alone
    os.killpg(job.pid, signal.SIGINT)  # as a terminal does: the whole process group
    stdout, rest = job.communicate(timeout=120)
    stderr = start.decode() + rest.decode()

    assert job.returncode == 130, stderr
    assert OWN_LOG_LINE.match(stderr) and stderr.splitlines()[1:] == ["interrupted"], stderr
    assert stdout == b""
    assert not out.exists() or list(out.iterdir()) == []  # no results, errors, temp folders
