"""How the benchmarks that print one JSON object print it (``--json``, else a one-line summary)."""

from __future__ import annotations

import json

import typer

#: ``--json`` of the benchmarks that print one JSON object (:func:`emit`).
JSON_OPTION = typer.Option(False, "--json", help="Print the result as JSON.")


def emit(out: dict, json_out: bool, line: str) -> None:
    """Print a benchmark's result: indented JSON, or its one-line summary."""
    typer.echo(json.dumps(out, indent=2) if json_out else line)
