"""deploy/monitoring: alert rules and the Grafana dashboard parse, and use only metrics the worker registers.

tests/stream/test_operations_signals.py checks the same names against a scrape of a running worker.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
METRIC = re.compile(r"\blola_[a-z0-9_]+")
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_info", "_created")


def alert_rules() -> list[dict]:
    doc = yaml.safe_load((MONITORING / "alerts.yaml").read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text(encoding="utf-8"))
    return [t["expr"] for panel in dash["panels"] for t in panel["targets"]]


def referenced_metrics() -> set[str]:
    exprs = [r["expr"] for r in alert_rules()] + dashboard_exprs()
    return {m for e in exprs for m in METRIC.findall(e)}


def exported_names(families) -> set[str]:
    """Every series name a registry (or a parsed scrape) can expose, samples or not yet."""
    names = set()
    for fam in families:
        names.update(fam.name + s for s in SUFFIXES)
        names.update(sample.name for sample in fam.samples)
    return names


def test_alert_rules_are_well_formed():
    rules = alert_rules()
    assert len(rules) >= 8
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert rule["expr"].count("(") == rule["expr"].count(")")
    assert len({r["alert"] for r in rules}) == len(rules)


def test_dashboard_is_grafana_json_with_prometheus_targets():
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text(encoding="utf-8"))
    assert dash["uid"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["targets"] and all(t["expr"] for t in p["targets"]) for p in dash["panels"])


def test_every_expression_uses_metrics_the_worker_registers():
    from lola.stream.worker import WorkerMetrics  # (defined in the observability module; its name moves)

    registered = exported_names(WorkerMetrics().registry.collect())
    missing = referenced_metrics() - registered
    assert not missing, f"alerts/dashboard reference metrics the worker does not export: {sorted(missing)}"
    # and every new signal of issue 21 is on the dashboard
    for name in ("lola_decision_seconds_bucket", "lola_prior_seconds_bucket", "lola_state_bytes",
                 "lola_prior_model_info", "lola_checkpoint_limit_bytes", "lola_experiments"):
        assert name in referenced_metrics(), name
