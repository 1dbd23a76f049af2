"""lola serve end to end: rank -> impression -> reward -> the worker's exact counts, through the real broker.

Kept beside the stream tests because it needs their broker fixtures (tests/ has no packages).
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from lola.client import EdgeAllocator, EventProducer, variant
from lola.serve.app import create_app

KEY = {"X-API-Key": "secret"}


@pytest.mark.broker
def test_rank_impression_reward_reach_the_worker_counts(stream_settings, thread_worker, helpers):
    s = stream_settings(constant_prior=0.05)
    w = thread_worker(s)
    with EventProducer(settings=s) as producer:
        for vid in ("a", "b"):
            producer.send(variant("exp-http", vid, f"headline {vid}"))
    with EdgeAllocator(settings=s, seed=9) as edge:
        client = TestClient(create_app(edge, ["secret"]))
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200 or "exp-http" not in edge.plans:
            assert time.monotonic() < deadline, "the edge never saw the experiment's snapshot"
            time.sleep(0.2)
        ranked = [client.post("/rank", json={"experiment_id": "exp-http"}, headers=KEY).json() for _ in range(20)]
        for r in ranked[:15]:  # 15 displayed, 5 never shown
            assert client.post("/impression", json={"event_id": r["event_id"]}, headers=KEY).status_code == 200
        for r in ranked[:4] + ranked[:2]:  # 4 clicks, two of them retried
            assert client.post("/reward", json={"event_id": r["event_id"]}, headers=KEY).status_code == 200
        conv = client.post("/reward", json={"event_id": ranked[5]["event_id"], "kind": "conversion", "value": 3.0},
                           headers=KEY)
        assert conv.status_code == 200
        assert edge.flush(30) == 0
    truth = {"exp-http": {v: {"impressions": sum(r["variant_id"] == v for r in ranked[:15]),
                              "clicks": sum(r["variant_id"] == v for r in ranked[:4]),
                              "conversions": 3 * (ranked[5]["variant_id"] == v)} for v in ("a", "b")}}
    helpers.wait_for_counts(s, truth)
    w.stop()


@pytest.mark.broker
def test_server_started_before_the_worker_waits_for_the_snapshots_topic(stream_settings, thread_worker):
    # a server (or pod) that starts before any worker created the topic must stay alive and not
    # ready, then become ready by itself once the topic exists: it used to exit with an error
    s = stream_settings(constant_prior=0.05)
    with EdgeAllocator(settings=s, seed=3) as edge:
        client = TestClient(create_app(edge, ["secret"]))
        deadline = time.monotonic() + 30
        while not edge.waiting_for_topic:
            assert time.monotonic() < deadline, "the allocator never reported the missing topic"
            time.sleep(0.1)
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "snapshots topic does not exist yet"
        w = thread_worker(s)
        with EventProducer(settings=s) as producer:
            producer.send(variant("exp-late", "a", "headline a"))
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200 or "exp-late" not in edge.plans:
            assert time.monotonic() < deadline, "the allocator never picked up the topic once it existed"
            time.sleep(0.2)
        assert not edge.waiting_for_topic
        assert client.post("/rank", json={"experiment_id": "exp-late"}, headers=KEY).json()["variant_id"] == "a"
    w.stop()
