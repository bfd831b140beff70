"""When the nightly retrain runs, defined once in code, and Prefect's embedded way to serve it.

`nightly_deployment` is the deployment with its cron schedule, which `digitflow schedule` serves
from its own process (no work pool or worker). `infra/prefect.yaml` declares the same schedule
for `prefect deploy` onto a process work pool; a test keeps the two in step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.schedules import Schedule

FLOW_NAME = "retrain"
DEPLOYMENT_NAME = "nightly"
NIGHTLY_CRON = "0 2 * * *"
NIGHTLY_TIMEZONE = "UTC"
TAGS = ["digitflow", "nightly"]


def nightly_schedule(cron: str = NIGHTLY_CRON, timezone: str = NIGHTLY_TIMEZONE) -> Schedule:
    """A cron schedule in an explicit IANA timezone; an invalid cron or timezone: ValueError."""
    from prefect.schedules import Cron

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {timezone!r}: use an IANA name such as UTC") from None
    return Cron(cron, timezone=timezone)


def nightly_deployment(
    parameters: dict[str, Any],
    cron: str = NIGHTLY_CRON,
    timezone: str = NIGHTLY_TIMEZONE,
    name: str = DEPLOYMENT_NAME,
) -> RunnerDeployment:
    """The deployment `retrain/<name>`: the flow on this schedule, with these parameters."""
    from prefect.deployments.runner import EntrypointType

    from flows.retrain import retrain

    return retrain.to_deployment(
        name=name,
        schedules=[nightly_schedule(cron, timezone)],
        parameters=parameters,
        tags=TAGS,
        # Runs import `flows.retrain` from the installed package, whatever the directory.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
