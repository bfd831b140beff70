"""Wall time of CLI commands that need no model: they must start without TensorFlow.

    .venv/bin/python benchmarks/cli_startup.py [--runs 5]

Runs each command in a fresh process against an empty temporary store and $DIGITFLOW_HOME and
prints a markdown table (best and median of the runs) for benchmarks/RESULTS.md. Wall times
depend on the machine and its load; the tests check what makes them short (no TensorFlow).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DIGITFLOW = str(Path(sys.executable).with_name("digitflow"))
COMMANDS = (
    ("digitflow --help", [DIGITFLOW, "--help"]),
    ("digitflow models list", [DIGITFLOW, "models", "list"]),
    ("digitflow models history", [DIGITFLOW, "models", "history"]),
    ("import digitflow.cli", [sys.executable, "-c", "import digitflow.cli"]),
)


def timings(command: list[str], runs: int, env: dict[str, str]) -> list[float]:
    """Seconds per run of `command`, each in a fresh process; fails if the command does."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="digitflow-bench-") as home:
        env = {**os.environ, "DIGITFLOW_HOME": home, "DIGITFLOW_STORE": f"{home}/models"}
        print(f"| command | best of {args.runs} | median |")
        print("| --- | --- | --- |")
        for name, command in COMMANDS:
            seconds = timings(command, args.runs, env)
            print(f"| `{name}` | {min(seconds):.2f} s | {statistics.median(seconds):.2f} s |")


if __name__ == "__main__":
    main()
