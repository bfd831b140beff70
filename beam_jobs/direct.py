"""Launch-time tuning for Beam's DirectRunner, which runs a job on this machine's cores.

The mode follows the job's size: in-process for small jobs, a worker process per core for large
ones (an explicit `--direct_running_mode` / `--direct_num_workers` always wins), and workers that
share the cores get a share of the model's threads each. Other runners are left as they are.
"""

from __future__ import annotations

import os

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

# In-process below this many image files, a process per core from it (see direct_defaults).
MULTI_PROCESS_FROM = 5_000
_DIRECT_RUNNERS = {"direct", "switchingdirect", "fnapi"}


def is_direct(options: PipelineOptions) -> bool:
    """Whether the job runs on the DirectRunner (Beam's default runner) or its engines."""
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    return runner.lower().removesuffix("runner") in _DIRECT_RUNNERS


def direct_defaults(options: PipelineOptions, beam_args: list[str], files: int) -> list[str]:
    """Options to add on the DirectRunner, for a job of about `files` files; given ones win.

    On this project's 2-core machine (benchmarks/RESULTS.md, "Bulk classification") the
    multi-process mode was the faster at 10,000 scans (746 vs 659 images/s) and at 100,000
    (1,163 vs 773); smaller jobs were not measured. The in-process mode starts no worker processes,
    each of which starts Python and Beam and loads the model, so it is the default for small jobs.
    """
    added = []
    mode = options.view_as(DirectOptions).direct_running_mode
    if not _given(beam_args, "direct_running_mode"):
        mode = "multi_processing" if files >= MULTI_PROCESS_FROM else "in_memory"
        added.append(f"--direct_running_mode={mode}")
    if mode != "in_memory" and not _given(beam_args, "direct_num_workers"):
        added.append(f"--direct_num_workers={os.cpu_count() or 1}")
    return added


def inference_threads(options: PipelineOptions) -> int | None:
    """The model's threads per worker when DirectRunner workers share this machine's cores."""
    direct = options.view_as(DirectOptions)
    if not is_direct(options) or direct.direct_running_mode == "in_memory":
        return None
    return max(1, (os.cpu_count() or 1) // max(1, direct.direct_num_workers))


def describe_runner(options: PipelineOptions) -> str:
    """The runner's name, with the DirectRunner's mode and workers: `DirectRunner (in_memory, 1
    worker)`."""
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    if is_direct(options):
        direct = options.view_as(DirectOptions)
        workers = direct.direct_num_workers if direct.direct_running_mode != "in_memory" else 1
        runner += f" ({direct.direct_running_mode}, {workers} worker{'s' * (workers > 1)})"
    return runner


def _given(args: list[str], name: str) -> bool:
    return any(arg == f"--{name}" or arg.startswith(f"--{name}=") for arg in args)
