"""CLI commands of lola.stream: broker, worker, loadgen, snapshot, dlq."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root ``lola`` app."""
