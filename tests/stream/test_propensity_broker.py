"""Every policy the worker can run, chosen by settings, through the real broker: each
decision's propensity is its arm's allocation, checked against the allocation twin
(tests/kernels/kernels_twin.py: SciPy quadrature for TS) within the stated 1e-6.

Events first (known counts, constant prior), then decision requests once the snapshots
show every count and prior: the state is then fixed, so each decision's propensity must be
the twin's allocation at the variant it names, and the snapshot's serving shares the whole
allocation.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson
import pytest

from lola.kernels import ExperimentParams
from lola.kernels.allocation import TS_ALLOCATION_ERROR
from lola.kernels.policy_table import TABLE as POLICY_TABLE
from lola.stream import kafka as kf
from lola.stream.features import text_features
from lola.stream.loadgen import send
from lola.stream.snapshot import read_snapshots

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "kernels"))  # tests/ has no packages
from kernels_twin import Twin  # noqa: E402

pytestmark = pytest.mark.broker

PRIOR = 0.03
COUNTS = {"a": (400, 12), "b": (300, 15), "c": (200, 4)}  # impressions, clicks per variant
POLICY_SETTINGS = {
    "llm2ucb": {"min_traffic": 0.05},
    "ucb": {"min_traffic": 0.05},
    "pure_llm": {"min_traffic": 0.05},
    "llm2ucb_eb": {},
    "ts": {"ts_alpha0": 1.38, "ts_beta0": 96.11},
    "llm_ts": {"n_aux": 300.0, "min_traffic": 0.02},
    "bai": {},
    "llm_bai": {"n_aux": 300.0},
    "ec": {"horizon": 5000},
    "ucb_burn_in": {"policy": "ucb", "burn_in": 10_000},
    "linucb": {"linucb_alpha": 0.5, "min_traffic": 0.05},
    "llm_linucb": {"n_aux": 300.0, "min_traffic": 0.05},
}
FEATURE_DIM = 8  # the worker's feature_dim in this test (lola.stream.features)
DECISIONS = 12


def _events():
    out = []
    for name, extra in POLICY_SETTINGS.items():
        settings = {"policy": name, **extra}
        exp = f"exp-{name}"
        for i, vid in enumerate(COUNTS):
            ev = {"type": "variant", "experiment_id": exp, "variant_id": vid, "text": f"{vid} text"}
            if i == 0:
                ev["settings"] = settings
            out.append((exp.encode(), orjson.dumps(ev)))
        for vid, (n, c) in COUNTS.items():
            for j in range(n):
                out.append((exp.encode(), orjson.dumps({"type": "impression", "experiment_id": exp, "variant_id": vid,
                                                        "event_id": f"{exp}-{vid}-i{j}", "ts": 1000.0 + j})))
            for j in range(c):
                out.append((exp.encode(), orjson.dumps({"type": "click", "experiment_id": exp, "variant_id": vid,
                                                        "event_id": f"{exp}-{vid}-c{j}", "ts": 1000.0 + j})))
    return out


def _twin_allocation(name: str) -> dict[str, float]:
    extra = dict(POLICY_SETTINGS[name])
    p = ExperimentParams(**{"policy": name, "alpha": 0.08, "n_aux": 1000.0, **extra})
    linear = POLICY_TABLE[p.policy].needs_features
    twin = Twin(FEATURE_DIM if linear else 0)
    row = twin.add_experiment(p)
    for vid, (n, c) in COUNTS.items():
        slot = twin.add_arm(row, PRIOR, text_features(f"{vid} text", FEATURE_DIM) if linear else None)
        for _ in range(n):  # one impression at a time: E&C and BAI act inside update
            twin.update_one(row, slot, 1.0, 0.0, 0.0)
        twin.update_one(row, slot, 0.0, float(c), 0.0)
    return dict(zip(COUNTS, twin.allocation(row)))


def _wait_for_fixed_state(s, timeout_s=120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        snaps = read_snapshots(s)
        ok = len(snaps) == len(POLICY_SETTINGS) and all(
            all(snap["arms"][v]["impressions"] == n and snap["arms"][v]["clicks"] == c
                and snap["arms"][v]["prior"] == PRIOR for v, (n, c) in COUNTS.items())
            for snap in snaps.values())
        if ok:
            return snaps
        time.sleep(0.5)
    pytest.fail(f"snapshots never showed the sent counts and priors: {snaps}")


def _read_decisions(s, want: int, timeout_s=60.0) -> list[dict]:
    from confluent_kafka import Consumer

    conf = kf.consumer_config(s, "test-decision-reader")
    deadline = time.monotonic() + timeout_s
    out: list[dict] = []
    while time.monotonic() < deadline:
        c = Consumer(conf)
        md = c.list_topics(s.decisions_topic, timeout=10).topics[s.decisions_topic]
        c.close()
        out = [orjson.loads(m.value()) for p in sorted(md.partitions)
               for m in kf.read_partition_to_end(conf, s.decisions_topic, p, 0)]
        if len(out) >= want:
            return out
        time.sleep(0.5)
    pytest.fail(f"{len(out)} decisions of {want}")


@pytest.mark.slow
def test_every_policy_logs_the_propensity_of_its_allocation(stream_settings, thread_worker):
    s = stream_settings(constant_prior=PRIOR, feature_dim=FEATURE_DIM)
    worker = thread_worker(s)
    producer = kf_producer(s)
    send(producer, s.events_topic, _events())
    producer.flush(30)
    snaps = _wait_for_fixed_state(s)
    requests = [(f"exp-{name}".encode(), orjson.dumps({"type": "decision_request", "experiment_id": f"exp-{name}",
                                                      "request_id": f"{name}-r{i}"}))
                for name in POLICY_SETTINGS for i in range(DECISIONS)]
    send(producer, s.events_topic, requests)
    producer.flush(30)
    decisions = _read_decisions(s, len(requests))
    worker.stop()
    assert len({d["request_id"] for d in decisions}) == len(requests)
    for name in POLICY_SETTINGS:
        want = _twin_allocation(name)
        snap = snaps[f"exp-{name}"]
        for vid in COUNTS:
            assert abs(snap["arms"][vid]["serving_share"] - want[vid]) <= TS_ALLOCATION_ERROR, (name, vid)
        mine = [d for d in decisions if d["experiment_id"] == f"exp-{name}"]
        assert len(mine) == DECISIONS
        for d in mine:
            assert d["policy_version"] == snap["policy_version"], name
            assert want[d["variant_id"]] > 0, (name, d)
            assert abs(d["propensity"] - want[d["variant_id"]]) <= TS_ALLOCATION_ERROR, (name, d, want)


def kf_producer(s):
    from confluent_kafka import Producer

    return Producer(kf.producer_config(s))
