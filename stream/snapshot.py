"""Read the policy snapshot topic (``lola snapshot``) and compare with a truth file.

The counts view ``{"<experiment_id>": {"<variant_id>": {"impressions": n, "clicks": c,
"conversions": v}}}`` is the shape ``lola loadgen open --truth FILE`` writes, so the
two compare with ``==``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from lola.errors import BrokerError

COUNT_FIELDS = ("impressions", "clicks", "conversions")


def _num(x: Any) -> Any:
    return int(x) if isinstance(x, float) and x.is_integer() else x


def _decode(key: bytes | None, value: bytes | None) -> tuple[str, dict[str, Any]] | None:
    """(experiment id, snapshot) of one snapshot record; None for a tombstone or unreadable JSON."""
    if not value:
        return None  # tombstone: experiment deleted
    try:
        snap = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return snap.get("experiment_id", (key or b"").decode("utf-8", "replace")), snap


def read_snapshots(settings: Any, timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
    """Latest snapshot record per experiment: ``{experiment_id: snapshot}`` (one whole read of the topic)."""
    from lola.stream import kafka as kf

    conf = kf.consumer_config(settings, "lola-snapshot-reader")
    latest = kf.read_topic_latest(conf, settings.snapshots_topic, timeout_s)
    out: dict[str, dict[str, Any]] = {}
    for key, msg in latest.items():
        decoded = _decode(key, msg.value())
        if decoded is not None:
            out[decoded[0]] = decoded[1]
    return dict(sorted(out.items()))


class SnapshotFollower:
    """Follows the compacted snapshot topic incrementally: the latest record per experiment.

    For a view polled every few seconds (``lola demo``): re-reading the whole topic each
    time, as :func:`read_snapshots` does for a one-off read, would cost more and more as
    a run goes on. Raises :class:`~lola.errors.BrokerError` while the topic does not exist.
    """

    def __init__(self, settings: Any, group: str = "lola-snapshot-follower") -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from lola.stream import kafka as kf

        topic = settings.snapshots_topic
        self.consumer = Consumer(kf.consumer_config(settings, group, **{"queued.max.messages.kbytes": 65_536}))
        meta = self.consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            self.consumer.close()
            raise BrokerError(f"snapshot topic {topic} is not available yet")
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)])
        self.latest: dict[str, dict[str, Any]] = {}

    def poll(self, budget_s: float = 1.0) -> dict[str, dict[str, Any]]:
        """Apply what arrived since the last call (for at most ``budget_s``); returns ``{experiment_id: snapshot}``."""
        end = time.monotonic() + budget_s
        while time.monotonic() < end:
            msgs = self.consumer.consume(10_000, 0.05)
            if not msgs:
                break
            for msg in msgs:
                if msg.error() is None:
                    if not msg.value():  # a tombstone deletes the experiment, as read_snapshots does
                        self.latest.pop((msg.key() or b"").decode("utf-8", "replace"), None)
                        continue
                    decoded = _decode(msg.key(), msg.value())
                    if decoded is not None:
                        self.latest[decoded[0]] = decoded[1]
        return self.latest

    def close(self) -> None:
        self.consumer.close()


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
