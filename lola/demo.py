"""``lola demo``: the main job on the embedded broker and the default model."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add ``lola demo`` to the root app."""
