"""Operations commands (settings reference and similar)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add operations commands to the root app."""
