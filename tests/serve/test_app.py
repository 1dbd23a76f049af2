"""lola serve's HTTP API over an in-memory edge table: auth, limits, bad input, idempotent rewards."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from lola.client import EdgeTable
from lola.serve.app import create_app

KEY = {"X-API-Key": "k1"}


class Recorder(EdgeTable):
    """The allocator's in-memory part; what the Kafka one would send is kept in a list."""

    def __init__(self) -> None:
        super().__init__(rng=3, clock=lambda: 10.0)
        self.sent: list[tuple] = []
        self.is_ready = True
        self.apply({"e": {"experiment_id": "e", "policy": "llm2ucb", "policy_version": 4, "ts": 0.0,
                          "arms": {"a": {"active": True}, "b": {"active": True}},
                          "edge": {"method": "hallucinate", "horizon_impressions": 5.0, "valid_until": 100.0,
                                   "allocation": {"a": 0.75, "b": 0.25}, "fallback": {"a": 0.5, "b": 0.5}}}})

    def impression(self, d):
        self.sent.append(("impression", d.request_id))

    def click(self, d):
        self.sent.append(("click", d.request_id))

    def conversion(self, d, value):
        self.sent.append(("conversion", d.request_id, value))

    def ready(self):
        return self.is_ready


@pytest.fixture
def api():
    rec = Recorder()
    return rec, TestClient(create_app(rec, ["k1", "k2"], rate_per_s=1000.0, burst=50, issued_max=3))


def test_rank_impression_reward_once_each(api):
    rec, client = api
    r = client.post("/rank", json={"experiment_id": "e", "context": {"geo": "fr"}}, headers=KEY)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["variant_id"] in ("a", "b") and body["propensity"] in (0.75, 0.25) and body["policy_version"] == 4
    eid = body["event_id"]
    assert client.post("/impression", json={"event_id": eid}, headers=KEY).json() == {"event_id": eid, "duplicate": False}
    assert client.post("/impression", json={"event_id": eid}, headers=KEY).json()["duplicate"] is True
    assert client.post("/reward", json={"event_id": eid}, headers=KEY).json()["duplicate"] is False
    assert client.post("/reward", json={"event_id": eid}, headers=KEY).json()["duplicate"] is True
    r = client.post("/reward", json={"event_id": eid, "kind": "conversion", "value": 12.5}, headers=KEY)
    assert r.json()["duplicate"] is False
    assert rec.sent == [("impression", eid), ("click", eid), ("conversion", eid, 12.5)]


def test_a_reward_before_the_impression_sends_the_impression_first(api):
    rec, client = api
    eid = client.post("/rank", json={"experiment_id": "e"}, headers=KEY).json()["event_id"]
    client.post("/reward", json={"event_id": eid}, headers=KEY)
    assert rec.sent == [("impression", eid), ("click", eid)]


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": ""}, {"X-API-Key": "nope"}, {"X-API-Key": "k1 "}])
def test_every_api_endpoint_needs_a_key(api, headers):
    _, client = api
    for path, body in (("/rank", {"experiment_id": "e"}), ("/impression", {"event_id": "x"}),
                       ("/reward", {"event_id": "x"})):
        assert client.post(path, json=body, headers=headers).status_code == 401


@pytest.mark.parametrize("path,body,status", [
    ("/rank", {}, 422), ("/rank", {"experiment_id": ""}, 422), ("/rank", {"experiment_id": "x" * 257}, 422),
    ("/rank", {"experiment_id": "e", "extra": 1}, 422), ("/rank", {"experiment_id": "unknown"}, 404),
    ("/rank", {"experiment_id": 5}, 422), ("/reward", {"event_id": "never-issued"}, 404),
    ("/impression", {"event_id": "never-issued"}, 404),
])
def test_bad_input_gets_a_reason_not_a_crash(api, path, body, status):
    rec, client = api
    r = client.post(path, json=body, headers=KEY)
    assert r.status_code == status and "detail" in r.json()
    assert rec.sent == []


@pytest.mark.parametrize("reward", [{"value": 2.0}, {"kind": "conversion", "value": 0.0},
                                    {"kind": "conversion", "value": -1.0}, {"kind": "conversion", "value": 1e10},
                                    {"kind": "refund"}])
def test_reward_values_are_bounded(api, reward):
    rec, client = api
    eid = client.post("/rank", json={"experiment_id": "e"}, headers=KEY).json()["event_id"]
    assert client.post("/reward", json={"event_id": eid, **reward}, headers=KEY).status_code == 422
    assert rec.sent == []
    r = client.post("/reward", content=b'{"event_id": "%s", "kind": "conversion", "value": NaN}' % eid.encode(),
                    headers={**KEY, "content-type": "application/json"})
    assert r.status_code == 422


def test_only_the_newest_issued_ids_are_remembered(api):
    _, client = api
    ids = [client.post("/rank", json={"experiment_id": "e"}, headers=KEY).json()["event_id"] for _ in range(4)]
    assert client.post("/reward", json={"event_id": ids[0]}, headers=KEY).status_code == 404
    assert client.post("/reward", json={"event_id": ids[3]}, headers=KEY).status_code == 200


def test_rate_limit_per_key():
    rec = Recorder()
    client = TestClient(create_app(rec, ["k1", "k2"], rate_per_s=0.001, burst=3))
    codes = [client.post("/rank", json={"experiment_id": "e"}, headers=KEY).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    assert client.post("/rank", json={"experiment_id": "e"}, headers={"X-API-Key": "k2"}).status_code == 200


def test_probes_metrics_and_api_page(api):
    rec, client = api
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    rec.is_ready = False
    assert client.get("/readyz").status_code == 503
    client.post("/rank", json={"experiment_id": "e"}, headers=KEY)
    assert 'lola_serve_requests_total{endpoint="rank",status="200"} 1.0' in client.get("/metrics").text
    spec = client.get("/openapi.json").json()
    assert {"/rank", "/reward", "/impression"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_no_key_no_server():
    with pytest.raises(ValueError):
        create_app(Recorder(), [])
