"""`digitflow review`: what a person needs to label a bulk run's low-confidence rows."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `digitflow` app."""
