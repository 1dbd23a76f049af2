"""``lola comply check --policy FILE (--text T | --in CSV) [--experiment ID] [--json]``.

Exit status: 0 when every text is compliant, 1 when one is not, 2 for a bad argument
or policy file (one line, like every lola error).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional

import typer

from lola.comply.check import check_text
from lola.comply.policy import load_policy
from lola.errors import ConfigError, DataError

comply_app = typer.Typer(help="Compliance policy: check texts against the rules the worker and the generator use.",
                         no_args_is_help=True)
TEXT_COLUMNS = ("text", "headline")
#: A CSV larger than this is refused (the checker is cheap, but the output is one row per text).
MAX_CSV_ROWS = 1_000_000


def read_texts(path: Path) -> list[tuple[str | None, str | None, str]]:
    """``(experiment_id, variant_id, text)`` rows of a CSV with a ``text`` (or ``headline``) column."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            column = next((c for c in TEXT_COLUMNS if c in (reader.fieldnames or ())), None)
            if column is None:
                raise DataError(f"{path}: no 'text' or 'headline' column (found {reader.fieldnames})")
            rows = []
            for row in reader:
                if len(rows) >= MAX_CSV_ROWS:
                    raise DataError(f"{path}: more than {MAX_CSV_ROWS:,} rows")
                rows.append((row.get("experiment_id") or None, row.get("variant_id") or None, row[column] or ""))
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


@comply_app.command("check")
def check(
    policy: Optional[Path] = typer.Option(None, "--policy", help="Policy YAML (default: the shipped default policy)."),
    text: Optional[str] = typer.Option(None, "--text", help="One text to check."),
    in_csv: Optional[Path] = typer.Option(None, "--in", help="CSV with a text (or headline) column; "
                                          "optional experiment_id and variant_id columns."),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="Experiment id for --text "
                                             "(selects the required disclosures)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per text, one per line."),
) -> None:
    """Check texts against a compliance policy (exit 1 if any is not compliant)."""
    if (text is None) == (in_csv is None):
        raise ConfigError("give exactly one of --text or --in")
    rules = load_policy(policy)
    rows = [(experiment, None, text)] if text is not None else read_texts(in_csv)
    failed = 0
    for experiment_id, variant_id, body in rows:
        verdict = check_text(rules, body, experiment_id)
        failed += not verdict.ok
        if as_json:
            typer.echo(json.dumps({"experiment_id": experiment_id, "variant_id": variant_id, "text": body,
                                   **verdict.to_dict()}, ensure_ascii=False))
        else:
            typer.echo(f"{'ok     ' if verdict.ok else 'BLOCKED'}  {body[:80]!r}" +
                       ("" if verdict.ok else f"  ({verdict.reason})"))
    if not as_json:
        typer.echo(f"{len(rows) - failed}/{len(rows)} compliant (policy {rules.name})", err=True)
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(comply_app, name="comply")
