"""Alerts for the nightly retrain: a Prefect automation that posts to a webhook you own.

`ensure_alerts(url)` saves a Custom Webhook notification block and creates (or updates) one
automation: when a run of the deployment `retrain/<deployment>` ends Failed, Crashed or
Not promoted, Prefect's server posts JSON `{"subject": ..., "text": ...}` to the URL. Both are
named, so running it again changes the URL instead of adding a second alert.

The URL usually carries its token (Slack, Teams, ...), so it is kept in the block's secret field
(`secrets`, which the API shows as `********` unless asked for secrets) and substituted into the
request at send time; only its origin, `scheme://host[:port]`, is ever shown.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from uuid import UUID

from flows.schedule import DEPLOYMENT_NAME, FLOW_NAME

if TYPE_CHECKING:
    from prefect.automations import Automation

ALERT_STATES = ("Failed", "Crashed", "Not promoted")
URL_SECRET = "webhook_url"  # the key of the URL in the block's secret values
# Prefect's rule for block names, of which the deployment name is part (and not empty).
DEPLOYMENT_NAME_RULE = re.compile(r"[a-z0-9-]+")
SUBJECT = "digitflow: {{ flow_run.name }} ended {{ flow_run.state.name }}"
BODY = (
    "Nightly retrain run {{ flow_run.name }} of {{ deployment.name }} ended in state "
    "{{ flow_run.state.name }}: {{ flow_run.state.message }}"
)


def webhook_origin(url: str) -> str:
    """`scheme://host[:port]` of an http(s) URL with a host; ValueError for anything else.

    The error never repeats the URL: a mistyped one still holds its token.
    """
    parts = urlsplit(url)
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number from 1 to 65535
        valid = False
    if not valid or any(char.isspace() or not char.isprintable() for char in url):
        raise ValueError("the webhook URL must be an http:// or https:// URL with a host")
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def check_deployment_name(deployment: str) -> str:
    """`deployment` if it can name the alert's block; ValueError otherwise."""
    if not DEPLOYMENT_NAME_RULE.fullmatch(deployment):
        raise ValueError(
            f"--name {deployment!r}: a deployment name here is lowercase letters, digits and "
            "dashes (it names the alert's Prefect block)"
        )
    return deployment


def block_name(deployment: str) -> str:
    return f"digitflow-{deployment}-alerts"


def automation_name(deployment: str) -> str:
    return f"digitflow: {FLOW_NAME}/{deployment} needs attention"


def save_webhook(url: str, deployment: str) -> UUID:
    """The notification block that posts to `url`, kept as a secret; returns its id.

    Private addresses are allowed: alert receivers often live inside the network.
    """
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name=block_name(deployment),
        url=f"{{{{{URL_SECRET}}}}}",
        json_data={"subject": "{{subject}}", "text": "{{body}}"},
        allow_private_urls=True,
        secrets={URL_SECRET: url},
    )
    return block.save(block_name(deployment), overwrite=True)


def ensure_alerts(url: str, deployment: str = DEPLOYMENT_NAME) -> Automation:
    """Create or update the automation that alerts on failed and rejected nightly runs.

    ValueError, before anything is saved, for a URL or deployment name that cannot work.
    """
    from prefect.automations import Automation, EventTrigger, Posture, SendNotification

    webhook_origin(url)  # the check
    block_id = save_webhook(url, check_deployment_name(deployment))
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
