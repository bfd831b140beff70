"""`digitflow data add | list | remove`: labelled spans of people's own scans in the store."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `digitflow` app."""
