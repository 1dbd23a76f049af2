"""CLI commands of lola.export: ``lola priors train|export|score|eval``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root ``lola`` app."""
