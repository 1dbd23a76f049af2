"""lola.client's EdgeAllocator: the in-memory table (pure) and the round trip through a worker (broker)."""

from __future__ import annotations

import time
from collections import Counter

import orjson
import pytest

from lola.client import EdgeAllocator, EdgeTable, EventProducer, NotServable, variant
from lola.stream.edge import servable


def snap(alloc, fallback=None, valid_until=100.0, arms=None, version=3):
    arms = arms or {v: {"active": True, "impressions": 0.0, "clicks": 0.0} for v in {**alloc, **(fallback or {})}}
    return {"experiment_id": "e", "policy": "llm2ucb", "policy_version": version, "ts": 0.0, "arms": arms,
            "edge": {"method": "hallucinate", "horizon_impressions": 10.0, "valid_until": valid_until,
                     "allocation": alloc, "fallback": fallback or {v: 1 / len(arms) for v in arms}}}


def test_draws_follow_the_allocation_with_its_propensity_and_are_seeded():
    clock = [50.0]
    table = EdgeTable(rng=7, clock=lambda: clock[0])
    table.apply({"e": snap({"a": 0.8, "b": 0.2})})
    ds = [table.decide("e") for _ in range(4000)]
    freq = Counter(d.variant_id for d in ds)
    assert abs(freq["a"] / 4000 - 0.8) < 0.03  # seeded: the same draws every run
    assert {d.propensity for d in ds if d.variant_id == "a"} == {0.8}
    assert all(d.policy_version == 3 and not d.fallback for d in ds) and len({d.request_id for d in ds}) == 4000
    again = EdgeTable(rng=7, clock=lambda: clock[0])
    again.apply({"e": snap({"a": 0.8, "b": 0.2})})
    assert [again.decide("e") for _ in range(50)] == ds[:50]


def test_past_the_horizon_the_fallback_is_served_and_counted():
    clock = [50.0]
    table = EdgeTable(rng=1, clock=lambda: clock[0])
    table.apply({"e": snap({"a": 1.0}, {"a": 0.5, "b": 0.5}, valid_until=100.0)})
    assert table.decide("e").variant_id == "a" and table.fallbacks == 0
    clock[0] = 100.5
    ds = [table.decide("e") for _ in range(200)]
    assert table.fallbacks == 200 and all(d.fallback and d.propensity == 0.5 for d in ds)
    assert {d.variant_id for d in ds} == {"a", "b"}


@pytest.mark.parametrize("state", ["pending", "blocked", "retired"])
def test_only_active_variants_are_served(state):
    arms = {"a": {"active": True}, "b": {"active": state != "retired", "state": state}}
    table = EdgeTable(rng=2, clock=lambda: 0.0)
    table.apply({"e": snap({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}, arms=arms)})
    assert {table.decide("e").variant_id for _ in range(100)} == {"a"}
    assert not servable(arms["b"])
    table.apply({"e": snap({"b": 1.0}, {"b": 1.0}, arms=arms)})
    with pytest.raises(NotServable):
        table.decide("e")
    with pytest.raises(NotServable):
        table.decide("unknown")


@pytest.mark.broker
def test_edge_decisions_reach_the_worker_as_exact_counts_and_the_decisions_topic(stream_settings, thread_worker, helpers):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from lola.stream import kafka as kf

    s = stream_settings(constant_prior=0.05)
    w = thread_worker(s)
    with EventProducer(settings=s) as producer:
        for vid in ("a", "b", "c"):
            producer.send(variant("exp-edge", vid, f"headline {vid}"))
    with EdgeAllocator(settings=s, seed=5, log_impressions=True) as edge:
        deadline = time.monotonic() + 60
        while "exp-edge" not in edge.plans and time.monotonic() < deadline:
            time.sleep(0.2)
        ds = [edge.decide("exp-edge") for _ in range(60)]
        for d in ds[:7]:
            edge.click(d)
        assert edge.flush(30) == 0
    truth = {"exp-edge": {v: {"impressions": sum(d.variant_id == v for d in ds),
                              "clicks": sum(d.variant_id == v for d in ds[:7]), "conversions": 0}
                          for v in ("a", "b", "c")}}
    helpers.wait_for_counts(s, truth)
    consumer = Consumer(kf.consumer_config(s, "edge-test-reader"))
    consumer.assign([TopicPartition(s.decisions_topic, p, OFFSET_BEGINNING) for p in range(s.partitions)])
    got: dict[str, dict] = {}
    deadline = time.monotonic() + 60
    while len(got) < len(ds) and time.monotonic() < deadline:
        for msg in consumer.consume(1000, 0.5):
            if msg.error() is None:
                rec = orjson.loads(msg.value())
                got[rec["request_id"]] = rec
    consumer.close()
    assert {d.request_id: (d.variant_id, d.propensity) for d in ds} == \
        {r: (v["variant_id"], v["propensity"]) for r, v in got.items()}
    assert all(v["policy"].endswith("@edge") for v in got.values())
    w.stop()
