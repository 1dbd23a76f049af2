"""The compliance gate through the real (embedded Tansu) broker: a blocked variant is never
served, neither by the worker's decisions nor by the edge allocator (issue 25)."""

from __future__ import annotations

import os
import time
from collections import Counter

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from lola.client import EdgeAllocator
from lola.stream import kafka as kf
from lola.stream.loadgen import send
from lola.stream.snapshot import read_snapshots

pytestmark = [pytest.mark.broker, pytest.mark.slow]

POLICY = "version: 1\nname: test\nmax_length: 150\nbanned_terms: [ducks]\n"
EXPERIMENTS = [f"exp-{i}" for i in range(4)]
# The issue asks for 1M decisions; LOLA_TEST_COMPLIANCE_DECISIONS can lower it on a slow machine.
DECISIONS = int(os.environ.get("LOLA_TEST_COMPLIANCE_DECISIONS", "1000000"))
TEXTS = {"a": "Seven swans cross the road together", "b": "A quiet morning on the lake",
         "c": "Ducks take over the town square"}


def _decision_counts(s, want: int, timeout_s: float) -> Counter:
    conf = kf.consumer_config(s, "test-compliance-reader")
    counts: Counter = Counter()
    offsets: dict[int, int] = {}
    c = Consumer(conf)
    partitions = sorted(c.list_topics(s.decisions_topic, timeout=10).topics[s.decisions_topic].partitions)
    c.close()
    deadline = time.monotonic() + timeout_s
    while sum(counts.values()) < want and time.monotonic() < deadline:
        for p in partitions:  # read on from where the last pass stopped
            for m in kf.read_partition_to_end(conf, s.decisions_topic, p, offsets.get(p, 0)):
                counts[orjson.loads(m.value())["variant_id"]] += 1
                offsets[p] = m.offset() + 1
        time.sleep(0.5)
    return counts


def test_a_blocked_variant_gets_no_decision_and_the_edge_never_serves_it(stream_settings, thread_worker, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    s = stream_settings(compliance_policy=str(policy), constant_prior=0.05)
    kf.ensure_topics(s)
    producer = Producer(kf.producer_config(s))
    send(producer, s.events_topic, [(e.encode(), orjson.dumps({"type": "variant", "experiment_id": e,
                                                               "variant_id": v, "text": t}))
                                    for e in EXPERIMENTS for v, t in TEXTS.items()])
    producer.flush(30)
    tw = thread_worker(s)
    deadline = time.monotonic() + 60
    snaps: dict = {}
    while time.monotonic() < deadline:
        snaps = read_snapshots(s)
        if len(snaps) == len(EXPERIMENTS) and all(sn["arms"]["c"]["state"] == "blocked" for sn in snaps.values()):
            break
        time.sleep(0.3)
    assert all(sn["arms"]["c"]["state"] == "blocked" and "ducks" in sn["arms"]["c"]["state_reason"]
               and sn["arms"]["c"]["serving_share"] == 0.0 and "c" not in sn["edge"]["allocation"]
               and "c" not in sn["edge"]["fallback"] for sn in snaps.values()), snaps

    with EdgeAllocator(settings=s, seed=11) as edge:
        assert edge.wait_ready(60)
        edge_counts = Counter(edge.decide(EXPERIMENTS[i % 4]).variant_id for i in range(100_000))
    assert edge_counts["c"] == 0 and sum(edge_counts.values()) == 100_000

    requests = ((EXPERIMENTS[i % 4].encode(), orjson.dumps({"type": "decision_request",
                                                           "experiment_id": EXPERIMENTS[i % 4],
                                                           "request_id": f"r{i}"})) for i in range(DECISIONS))
    send(producer, s.events_topic, requests)
    producer.flush(60)
    counts = _decision_counts(s, DECISIONS + 100_000, timeout_s=300)
    tw.stop()
    # the edge's 100k decisions are logged on the decisions topic too
    assert sum(counts.values()) == DECISIONS + 100_000, counts
    assert counts["c"] == 0 and counts["a"] > 0 and counts["b"] > 0, counts
