"""Alerts for the nightly retrain: a Prefect automation that posts to a webhook you own.

`ensure_alerts(url)` saves a Custom Webhook notification block and creates (or updates) one
automation: when a run of the deployment `retrain/<deployment>` ends Failed, Crashed or
Not promoted, Prefect's server posts JSON `{"subject": ..., "text": ...}` to the URL. Both are
named, so running it again changes the URL instead of adding a second alert.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from flows.schedule import DEPLOYMENT_NAME, FLOW_NAME

if TYPE_CHECKING:
    from prefect.automations import Automation

ALERT_STATES = ("Failed", "Crashed", "Not promoted")
SUBJECT = "digitflow: {{ flow_run.name }} ended {{ flow_run.state.name }}"
BODY = (
    "Nightly retrain run {{ flow_run.name }} of {{ deployment.name }} ended in state "
    "{{ flow_run.state.name }}: {{ flow_run.state.message }}"
)


def block_name(deployment: str) -> str:
    return f"digitflow-{deployment}-alerts"


def automation_name(deployment: str) -> str:
    return f"digitflow: {FLOW_NAME}/{deployment} needs attention"


def save_webhook(url: str, deployment: str) -> UUID:
    """The notification block that posts to `url`; returns its id.

    Private addresses are allowed: alert receivers often live inside the network.
    """
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name=block_name(deployment),
        url=url,
        json_data={"subject": "{{subject}}", "text": "{{body}}"},
        allow_private_urls=True,
    )
    return block.save(block_name(deployment), overwrite=True)


def ensure_alerts(url: str, deployment: str = DEPLOYMENT_NAME) -> Automation:
    """Create or update the automation that alerts on failed and rejected nightly runs."""
    from prefect.automations import Automation, EventTrigger, Posture, SendNotification

    block_id = save_webhook(url, deployment)
    automation = Automation(
        name=automation_name(deployment),
        description="Posts to the digitflow webhook when a nightly retrain needs a person.",
        trigger=EventTrigger(
            expect={f"prefect.flow-run.{state}" for state in ALERT_STATES},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=[
                {"prefect.resource.role": "flow", "prefect.resource.name": FLOW_NAME},
                {"prefect.resource.role": "deployment", "prefect.resource.name": deployment},
            ],
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)],
    )
    try:
        existing = Automation.read(name=automation.name)
    except ValueError:  # none of that name yet
        return automation.create()
    automation.id = existing.id
    automation.update()
    return automation
