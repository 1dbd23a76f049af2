"""A contextual experiment through the real broker: the worker learns a segment-dependent best
arm from the outcomes that join its decisions, and a bad context is dead-lettered (redacted)."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from lola.stream import kafka as kf
from lola.stream.loadgen import send

pytestmark = [pytest.mark.broker, pytest.mark.slow]

EXP = "ctx-exp"
SPEC = {"algorithm": "linucb", "alpha": 0.3, "n_aux": 0, "features": {"categorical": ["segment"]}}
CTR = {("young", "a"): 0.9, ("young", "b"): 0.1, ("old", "a"): 0.1, ("old", "b"): 0.9}
ROUNDS, PER_ROUND = 12, 20


def _decisions(s) -> dict[str, dict]:
    from confluent_kafka import Consumer

    conf = kf.consumer_config(s, "test-ctx-decision-reader")
    c = Consumer(conf)
    md = c.list_topics(s.decisions_topic, timeout=10).topics[s.decisions_topic]
    c.close()
    return {d["request_id"]: d for p in sorted(md.partitions)
            for d in (orjson.loads(m.value()) for m in kf.read_partition_to_end(conf, s.decisions_topic, p, 0))}


def _wait_decisions(s, ids: list[str], timeout_s: float = 60.0) -> dict[str, dict]:
    deadline = time.monotonic() + timeout_s
    got: dict[str, dict] = {}
    while time.monotonic() < deadline:
        got = _decisions(s)
        if all(i in got for i in ids):
            return got
        time.sleep(0.2)
    pytest.fail(f"{sum(i in got for i in ids)} of {len(ids)} decisions came back")


def test_contextual_policy_learns_segment_best_arm_through_the_broker(stream_settings, thread_worker, helpers):
    from confluent_kafka import Producer

    s = stream_settings()
    worker = thread_worker(s)
    producer = Producer(kf.producer_config(s))
    key = EXP.encode()
    send(producer, s.events_topic, [
        (key, orjson.dumps({"type": "variant", "experiment_id": EXP, "variant_id": v, "text": f"headline {v}",
                            "settings": {"contextual": SPEC}})) for v in ("a", "b")])
    rng = np.random.default_rng(1)
    picks: dict[str, list[str]] = {"young": [], "old": []}
    for r in range(ROUNDS):
        segs = [str(x) for x in rng.choice(["young", "old"], PER_ROUND)]
        ids = [f"r{r}-{i}" for i in range(PER_ROUND)]
        send(producer, s.events_topic, [(key, orjson.dumps({"type": "decision_request", "experiment_id": EXP,
                                                            "request_id": rid, "context": {"segment": seg}}))
                                        for rid, seg in zip(ids, segs)])
        producer.flush(30)
        got = _wait_decisions(s, ids)
        outcomes = []
        for rid, seg in zip(ids, segs):
            d = got[rid]
            assert d["policy"] == "ctx_linucb" and 0 < d["propensity"] <= 1
            picks[seg].append(d["variant_id"])
            outcomes.append({"type": "impression", "experiment_id": EXP, "variant_id": d["variant_id"],
                             "event_id": "i" + rid, "request_id": rid, "ts": time.time()})
            if rng.random() < CTR[(seg, d["variant_id"])]:
                outcomes.append({"type": "click", "experiment_id": EXP, "variant_id": d["variant_id"],
                                 "event_id": "c" + rid, "request_id": rid, "ts": time.time()})
        send(producer, s.events_topic, [(key, orjson.dumps(o)) for o in outcomes])
    # a bad context: dead-lettered with its reason, the raw value never kept
    send(producer, s.events_topic, [(key, orjson.dumps({"type": "decision_request", "experiment_id": EXP,
                                                        "request_id": "bad", "user_id": "carol",
                                                        "context": {"segment": {"nested": "secret-v"}}}))])
    producer.flush(30)
    deadline = time.monotonic() + 60
    dlq: list = []
    while time.monotonic() < deadline and not dlq:
        dlq = [d for d in helpers.read_dead_letters(s) if d[1] == key]
        time.sleep(0.3)
    worker.stop()
    assert len(dlq) == 1 and dlq[0][0].get("lola.reason") in (b"bad_context", "bad_context"), dlq
    assert b"secret-v" not in dlq[0][2] and b"carol" not in dlq[0][2]
    late = {seg: p[-40:] for seg, p in picks.items()}
    assert late["young"].count("a") > 0.75 * len(late["young"]), picks
    assert late["old"].count("b") > 0.75 * len(late["old"]), picks


def test_closed_loop_contextual_requests_join_their_outcomes(stream_settings, thread_worker):
    from lola.data.upworthy import HeadlineTest
    from lola.stream.loadgen import run_closed
    from lola.stream.snapshot import read_snapshots

    s = stream_settings()
    kf.ensure_topics(s)
    test = HeadlineTest("ctx", "eye", ("Dull headline", "Great headline"),
                        np.array([10_000, 10_000]), np.array([150, 450]))
    tw = thread_worker(s)
    spec = {"algorithm": "falcon", "gamma_scale": 10.0, "first_epoch": 16, "features": {"categorical": ["segment"]}}
    summary = run_closed(s, [test], [300], seed=5, inflight=32, timeout_s=120, contextual=spec)
    assert summary["impressions"] == 300 and summary["expected_clicks_segment_oracle"] > 0
    deadline = time.monotonic() + 60
    ctx: dict = {}
    while time.monotonic() < deadline:  # every impression names its request: all 300 join
        snaps = read_snapshots(s)
        ctx = next(iter(snaps.values()), {}).get("contextual") or {}
        if ctx.get("impressions") == 300:
            break
        time.sleep(0.3)
    tw.stop()
    assert ctx.get("impressions") == 300 and ctx["algorithm"] == "falcon" and ctx["epoch"] >= 4, ctx
