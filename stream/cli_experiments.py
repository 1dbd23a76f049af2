"""``lola experiments list|show|archive``: the lifecycle seen from the snapshots topic.

``list`` and ``show`` read the compacted snapshots topic (status, arm states, counts);
``archive`` produces an ``experiment`` event (action archive) keyed by the experiment id,
so the worker that owns it publishes a final snapshot and evicts it after the attribution
window (docs/operations/lifecycle.md). Bad arguments raise ConfigError (one line).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from lola.errors import BrokerError, ConfigError, EventError
from lola.stream.cli_common import BOOTSTRAP_HELP, SETTINGS_HELP, load_settings, topics
from lola.stream.edge import arm_state

def _settings(settings_file: Optional[Path], bootstrap: Optional[str], topic_prefix: Optional[str]):
    s = load_settings(settings_file, bootstrap_servers=bootstrap, **topics(topic_prefix))
    s.require_bootstrap()
    return s


def _row(exp_id: str, snap: dict) -> dict:
    arms = snap.get("arms", {})
    states: dict[str, int] = {}
    for arm in arms.values():
        state = arm_state(arm)
        states[state] = states.get(state, 0) + 1
    return {"experiment_id": exp_id, "status": snap.get("status") or "running", "policy": snap.get("policy"),
            "variants": states, "impressions": sum(a.get("impressions", 0.0) for a in arms.values()),
            "policy_version": snap.get("policy_version")}


def experiments_list(
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help=BOOTSTRAP_HELP),
    status: Optional[str] = typer.Option(None, "--status", help="only running, paused, stopped or archived"),
    as_json: bool = typer.Option(False, "--json"),
    topic_prefix: Optional[str] = typer.Option(None, "--topic-prefix"),
    settings_file: Optional[Path] = typer.Option(None, "--settings", help=SETTINGS_HELP),
) -> None:
    """List experiments with status, variant states and impressions (from the snapshots topic)."""
    from lola.stream.events import STATUSES
    from lola.stream.snapshot import read_snapshots

    if status is not None and status not in STATUSES:
        raise ConfigError(f"--status must be one of {', '.join(STATUSES)}, got {status!r}")
    rows = [_row(e, snap) for e, snap in read_snapshots(_settings(settings_file, bootstrap, topic_prefix)).items()]
    rows = [r for r in rows if status is None or r["status"] == status]
    if as_json:
        typer.echo(json.dumps(rows, sort_keys=True))
        return
    for r in rows:
        states = " ".join(f"{k}={v}" for k, v in sorted(r["variants"].items()))
        typer.echo(f"{r['experiment_id']}  {r['status']}  {r['policy']}  {states}  impressions={r['impressions']:g}")


def experiments_show(
    experiment_id: str = typer.Argument(..., help="the experiment id"),
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help=BOOTSTRAP_HELP),
    topic_prefix: Optional[str] = typer.Option(None, "--topic-prefix"),
    settings_file: Optional[Path] = typer.Option(None, "--settings", help=SETTINGS_HELP),
) -> None:
    """Print an experiment's latest policy snapshot (JSON)."""
    from lola.stream.snapshot import read_snapshots

    snap = read_snapshots(_settings(settings_file, bootstrap, topic_prefix)).get(experiment_id)
    if snap is None:
        raise ConfigError(f"no snapshot of experiment {experiment_id!r} (unknown, or evicted after archive)")
    typer.echo(json.dumps(snap, indent=2, sort_keys=True))


def experiments_archive(
    experiment_id: str = typer.Argument(..., help="the experiment id"),
    reason: Optional[str] = typer.Option(None, "--reason", help="kept in the snapshot's status reason"),
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help=BOOTSTRAP_HELP),
    topic_prefix: Optional[str] = typer.Option(None, "--topic-prefix"),
    settings_file: Optional[Path] = typer.Option(None, "--settings", help=SETTINGS_HELP),
) -> None:
    """Archive an experiment: final snapshot now, state evicted after its attribution window."""
    from confluent_kafka import Producer

    from lola.stream import kafka as kf
    from lola.stream.events import ExperimentEvent, decode, encode_event

    s = _settings(settings_file, bootstrap, topic_prefix)
    value = encode_event(ExperimentEvent(experiment_id=experiment_id, action="archive", reason=reason))
    try:
        decode(value, experiment_id.encode())  # the worker's own check: ids and reason lengths
    except EventError as exc:
        raise ConfigError(f"not a valid archive event: {exc.reason}: {exc.detail}") from None
    producer = Producer(kf.producer_config(s))
    kf.produce(producer, s.events_topic, value, key=experiment_id.encode())
    if producer.flush(30):
        raise BrokerError("the archive event was not acknowledged within 30 s")
    typer.echo(json.dumps({"experiment_id": experiment_id, "action": "archive", "topic": s.events_topic}))


def register(app: typer.Typer) -> None:
    app.command("list")(experiments_list)
    app.command("show")(experiments_show)
    app.command("archive")(experiments_archive)
