#!/usr/bin/env python3
"""Boot one Beam Python SDK worker as the SDK container's boot program does, without Docker.

    PATH=.venv/bin:$PATH python -m apache_beam.runners.worker.worker_pool_main \
        --service_port 50000 --container_executable infra/beam_worker_boot.py

The worker pool runs this once per worker it is asked for (jobs submitted with
`--environment_type EXTERNAL --environment_config HOST:50000`). It asks the runner's provision
service for the job's pipeline options, then runs Beam's `sdk_worker_main`, which gives them to
the worker, file systems included. Without `--container_executable`, the pool starts bare
`SdkHarness` processes that never get the options, and Beam's S3 file system fails in them
with "Must provide one of client or options". Nothing is staged: digitflow must be installed
in the Python environment first on PATH.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from apache_beam.portability.api import (
    beam_provision_api_pb2,
    beam_provision_api_pb2_grpc,
    endpoints_pb2,
)
from google.protobuf import json_format, text_format


def descriptor(url: str) -> str:
    """An ApiServiceDescriptor in the text format `sdk_worker_main` reads from its environment."""
    return text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for endpoint in ("id", "logging_endpoint", "artifact_endpoint", "provision_endpoint"):
        parser.add_argument(f"--{endpoint}", required=endpoint != "artifact_endpoint")
    parser.add_argument("--control_endpoint", required=True)
    args = parser.parse_args()

    with grpc.insecure_channel(args.provision_endpoint) as channel:
        info = (
            beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
            .GetProvisionInfo(
                beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=[("worker_id", args.id)]
            )
            .info
        )
    environment = {
        **os.environ,
        "WORKER_ID": args.id,
        "PIPELINE_OPTIONS": json_format.MessageToJson(info.pipeline_options),
        "RUNNER_CAPABILITIES": " ".join(info.runner_capabilities),
        "CONTROL_API_SERVICE_DESCRIPTOR": descriptor(args.control_endpoint),
        "LOGGING_API_SERVICE_DESCRIPTOR": descriptor(args.logging_endpoint),
    }
    worker = [sys.executable, "-m", "apache_beam.runners.worker.sdk_worker_main"]
    os.execve(sys.executable, worker, environment)


if __name__ == "__main__":
    main()
