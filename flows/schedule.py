"""When the nightly retrain runs, defined once in code, and Prefect's embedded way to serve it.

`serve_nightly` registers the deployment with its cron schedule and runs its flow runs from this
process (no work pool or worker). `infra/prefect.yaml` declares the same schedule for
`prefect deploy` onto a process work pool; a test keeps the two in step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
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


def serve_nightly(
    parameters: dict[str, Any],
    cron: str = NIGHTLY_CRON,
    timezone: str = NIGHTLY_TIMEZONE,
    name: str = DEPLOYMENT_NAME,
    notify_url: str | None = None,
) -> None:
    """Create or update the deployment `retrain/<name>` and run its flow runs until stopped.

    One run at a time; stopping the process pauses the schedule (Prefect's default for serve).
    With `notify_url`, failed and rejected runs are posted there (see `flows.alerts`).
    """
    from prefect.deployments.runner import EntrypointType

    from flows.retrain import retrain

    if notify_url:
        from flows.alerts import ensure_alerts

        ensure_alerts(notify_url, name)

    retrain.serve(
        name=name,
        schedules=[nightly_schedule(cron, timezone)],
        parameters=parameters,
        tags=TAGS,
        limit=1,
        # Runs import `flows.retrain` from the installed package, whatever the directory.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
