"""``lola report``: Markdown + self-contained HTML of what the experiments did (docs/reports.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from lola.errors import ConfigError, LolaError


def build(settings: Any, out: Path, experiment: Optional[str], bins: int, max_records: int,
          obd: Optional[str] = None) -> dict[str, Any]:
    """Read the topics (or an Open Bandit Dataset folder), write the report into ``out``;
    returns the summary (with the file paths)."""
    from lola.report.render import write
    from lola.report.summary import summarise
    from lola.stream.decision_log import NoJoinedDecision, read_obd, read_stream_log
    from lola.stream.snapshot import read_snapshots

    if obd is not None:  # a logged campaign without snapshots: over-time views and logging health
        summary = summarise(read_obd(obd), {}, None, bins)
        summary["over_time_source"] = f"the Open Bandit Dataset log {obd} (time = row number)"
        summary["files"] = {k: str(v) for k, v in write(summary, out).items()}
        return summary
    snapshots = read_snapshots(settings)
    if experiment is not None and experiment not in snapshots:
        raise LolaError(f"no policy snapshot of experiment {experiment!r}")
    try:
        log = read_stream_log(settings, max_records)
    except NoJoinedDecision:
        log = None  # no joined decision: the report shows the snapshots only
    summary = summarise(log, snapshots, experiment, bins)
    summary["files"] = {k: str(v) for k, v in write(summary, out).items()}
    return summary


def register(app: typer.Typer) -> None:
    """Add ``lola report``."""

    @app.command("report")
    def report_cmd(
        out: Path = typer.Option(..., "--out", help="folder for report.md, report.html, the PNGs and summary.json"),
        bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help="Kafka bootstrap HOST:PORT"),
        log: str = typer.Option("topics", "--log", help="topics (the worker's) or obd:DIR (an Open Bandit Dataset folder)"),
        experiment: Optional[str] = typer.Option(None, "--experiment", help="report one experiment only"),
        bins: int = typer.Option(20, help="time bins of the over-time figures"),
        max_records: int = typer.Option(5_000_000, help="most records read per topic"),
        topic_prefix: Optional[str] = typer.Option(None, "--topic-prefix"),
        settings_file: Optional[Path] = typer.Option(None, "--settings", help="env-style settings file"),
        as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
    ) -> None:
        """Report: allocation and P(best) over time, posteriors, winner, prior calibration, logging health."""
        import importlib.util

        from lola.stream.cli_common import load_settings as _settings, topics as _topics

        if importlib.util.find_spec("matplotlib") is None:  # a third-party extra, not our code
            raise ConfigError("lola report needs matplotlib: pip install 'lola-stream[analysis]'")
        if not 1 <= bins <= 500:
            raise ConfigError(f"--bins must be in [1, 500], got {bins}")
        if max_records < 1:
            raise ConfigError("--max-records must be >= 1")
        if log.startswith("obd:"):
            summary = build(None, out, experiment, bins, max_records, obd=log[4:])
        elif log != "topics":
            raise ConfigError(f"--log must be 'topics' or 'obd:DIR', got {log!r}")
        else:
            s = _settings(settings_file, bootstrap_servers=bootstrap, **_topics(topic_prefix))
            s.require_bootstrap()
            summary = build(s, out, experiment, bins, max_records)
        if as_json:
            typer.echo(json.dumps(summary, default=float))
        else:
            typer.echo(f"wrote {summary['files']['markdown']} and {summary['files']['html']}")
