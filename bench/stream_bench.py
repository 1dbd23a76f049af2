"""Placeholder: filled in by its owner (see README)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's command(s)."""
