"""CLI commands of lola.bench: ``lola bench kernels|stream|priors`` and ``lola replay``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root ``lola`` app."""
