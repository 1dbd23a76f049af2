"""Read the policy snapshot topic (``lola snapshot``) and compare with a truth file.

The counts view ``{"<experiment_id>": {"<variant_id>": {"impressions": n, "clicks": c,
"conversions": v}}}`` is the shape ``lola loadgen open --truth FILE`` writes, so the
two compare with ``==``.
"""

from __future__ import annotations

from typing import Any

import orjson

COUNT_FIELDS = ("impressions", "clicks", "conversions")


def _num(x: Any) -> Any:
    return int(x) if isinstance(x, float) and x.is_integer() else x


def read_snapshots(settings: Any, timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
    """Latest snapshot record per experiment: ``{experiment_id: snapshot}``."""
    from lola.stream import kafka as kf

    conf = kf.consumer_config(settings, "lola-snapshot-reader")
    latest = kf.read_topic_latest(conf, settings.snapshots_topic, timeout_s)
    out: dict[str, dict[str, Any]] = {}
    for key, msg in latest.items():
        value = msg.value()
        if not value:
            continue  # tombstone: experiment deleted
        try:
            snap = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        out[snap.get("experiment_id", (key or b"").decode("utf-8", "replace"))] = snap
    return dict(sorted(out.items()))


def counts_view(snapshots: dict[str, dict[str, Any]], full: bool = False) -> dict[str, dict[str, dict[str, Any]]]:
    """Per experiment and variant: counts only (or every arm field with ``full``)."""
    view: dict[str, dict[str, dict[str, Any]]] = {}
    for exp_id, snap in snapshots.items():
        arms = snap.get("arms", {})
        view[exp_id] = {vid: ({k: _num(v) for k, v in arm.items()} if full else
                              {k: _num(arm.get(k, 0)) for k in COUNT_FIELDS})
                        for vid, arm in sorted(arms.items())}
    return view


def diff_counts(expected: dict, actual: dict, limit: int = 10) -> list[str]:
    """Human-readable differences between two counts views (empty when equal)."""
    problems = []
    for exp_id in sorted(set(expected) | set(actual)):
        e, a = expected.get(exp_id), actual.get(exp_id)
        if e is None or a is None:
            problems.append(f"{exp_id}: {'missing from snapshot' if a is None else 'not in truth'}")
            continue
        for vid in sorted(set(e) | set(a)):
            if e.get(vid) != a.get(vid):
                problems.append(f"{exp_id}/{vid}: expected {e.get(vid)} got {a.get(vid)}")
    return problems[:limit]
