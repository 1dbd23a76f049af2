"""Cross-language: a kafkajs (npm) ad server produces events and reads decisions and snapshots.

Skipped only where node is not installed; with node present, a missing
``tests/js/node_modules`` is a failure (``make setup`` runs ``npm ci --prefix tests/js``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.slow]

JS = Path(__file__).resolve().parents[1] / "js"
NODE = shutil.which("node")


def kafka_partitions(settings, topic: str, keys: list[str]) -> dict[str, int]:
    """The partition librdkafka (murmur2, as the worker's producers use) picks for each key."""
    from confluent_kafka import Producer

    from lola.stream import kafka as kf

    got: dict[str, int] = {}
    producer = Producer(kf.producer_config(settings))
    for key in keys:
        producer.produce(topic, b"{}", key.encode(),
                         on_delivery=lambda err, msg: got.__setitem__(msg.key().decode(), msg.partition()))
    assert producer.flush(30) == 0
    return got


@pytest.mark.skipif(NODE is None, reason="node is not installed: the kafkajs interop test needs Node.js >= 14")
def test_kafkajs_produces_events_and_reads_decisions_and_snapshots(stream_settings, thread_worker):
    assert (JS / "node_modules" / "kafkajs").is_dir(), "kafkajs not installed: run `make setup` (npm ci --prefix tests/js)"
    s = stream_settings(constant_prior=0.05)
    assert s.compression == "gzip"  # the default: kafkajs reads gzip, not lz4/snappy/zstd
    w = thread_worker(s)
    env = {**os.environ, "BOOTSTRAP": s.bootstrap_servers, "EVENTS_TOPIC": s.events_topic,
           "DECISIONS_TOPIC": s.decisions_topic, "SNAPSHOTS_TOPIC": s.snapshots_topic,
           "EXPERIMENTS": "8", "TIMEOUT_MS": "60000"}
    proc = subprocess.run([NODE, str(JS / "interop.js")], env=env, capture_output=True, text=True, timeout=180)
    w.stop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["produced"] == 8 * 7
    assert out["decisions_ok"], "kafkajs did not read a decision for every request"
    assert len(out["decisions"]) == 8 * 3
    assert all(d["type"] == "decision" and d["variant_id"] in ("a", "b") for d in out["decisions"])
    assert out["snapshots_ok"], "kafkajs did not read every experiment's snapshot"
    for exp, snap in out["snapshots"].items():
        assert snap["arms"]["a"]["impressions"] == 1 and snap["arms"]["a"]["clicks"] == 1, (exp, snap)
    # kafkajs' default partitioner and the worker's librdkafka clients agree on every key.
    scratch = stream_settings()
    from lola.stream import kafka as kf

    kf.ensure_topics(scratch)
    assert kafka_partitions(scratch, scratch.events_topic, list(out["partitions"])) == out["partitions"]
