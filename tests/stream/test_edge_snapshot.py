"""The snapshot's ``edge`` block (lola.stream.edge): servable variants only, horizon, fallback."""

from __future__ import annotations

import orjson
import pytest

from lola.stream import events as ev
from lola.stream.edge import DEFAULT_HORIZON, arm_state, servable
from lola.stream.processor import ShardProcessor
from lola.stream.shard import ProcessorConfig


def rec(i, obj):
    return (i, obj["experiment_id"].encode(), orjson.dumps(obj))


def variant(vid, action="add"):
    return {"type": "variant", "experiment_id": "e", "variant_id": vid, "text": f"headline {vid}", "action": action}


def impressions(start, vid, n):
    return [{"type": "impression", "experiment_id": "e", "variant_id": vid, "event_id": f"i{start + j}", "ts": 1.0}
            for j in range(n)]


def test_edge_block_serves_active_variants_with_a_valid_horizon_and_fallback():
    proc = ShardProcessor(0, ProcessorConfig(snapshot_interval_s=2.0, edge_valid_s=30.0))
    events = [variant("a"), variant("b"), variant("c")] + impressions(0, "a", 40)
    proc.process([rec(i, o) for i, o in enumerate(events)])
    for vid, mu in (("a", 0.01), ("b", 0.03), ("c", 0.02)):
        proc.apply_prior("e", vid, mu)
    snap = proc.snapshot("e", now=1000.0)
    edge = snap["edge"]
    assert edge["method"] == "hallucinate" and edge["horizon_impressions"] == DEFAULT_HORIZON
    assert edge["valid_until"] == 1030.0
    assert sum(edge["allocation"].values()) == pytest.approx(1.0)
    assert edge["fallback"] == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    # 60 impressions in the next 10 s at a 2 s snapshot interval: a 12-decision interval
    proc.process([rec(100 + i, o) for i, o in enumerate(impressions(100, "b", 60))])
    proc.process([rec(200, variant("c", "retire"))])
    snap = proc.snapshot("e", now=1010.0)
    assert snap["edge"]["horizon_impressions"] == pytest.approx(12.0)
    assert "c" not in snap["edge"]["allocation"] and "c" not in snap["edge"]["fallback"]
    assert sum(snap["edge"]["allocation"].values()) == pytest.approx(1.0)
    decoded = orjson.loads(ev.encode_snapshot(snap))  # the model keeps the block
    assert decoded["edge"]["allocation"] == pytest.approx(snap["edge"]["allocation"])


@pytest.mark.parametrize("arm,state,ok", [({"active": True}, "active", True), ({"active": False}, "retired", False),
                                          ({"active": False, "state": "pending"}, "pending", False),
                                          ({"active": True, "state": "blocked"}, "blocked", False),
                                          ({"active": True, "state": "active"}, "active", True)])
def test_variant_states_missing_state_follows_active(arm, state, ok):
    assert arm_state(arm) == state and servable(arm) is ok


def test_a_stopped_experiment_edge_serves_the_arm_the_worker_serves():
    # the worker's rule (lifecycle.best_variant) is the most-played arm, here not the one with
    # the larger empirical mean: the edge must follow the worker, not a second rule of its own
    proc = ShardProcessor(0)
    events = [variant("a"), variant("b")] + impressions(0, "a", 10) + impressions(10, "b", 2)
    events.append({"type": "click", "experiment_id": "e", "variant_id": "b", "event_id": "c0", "ts": 2.0,
                   "impression_id": "i10"})
    events.append({"type": "experiment", "experiment_id": "e", "action": "stop"})
    proc.process([rec(i, o) for i, o in enumerate(events)])
    snap = proc.snapshot("e", now=1000.0)
    assert snap["status"] == "stopped" and snap["arms"]["a"]["active"] and not snap["arms"]["b"]["active"]
    assert snap["edge"]["allocation"] == {"a": 1.0} and snap["edge"]["fallback"] == {"a": 1.0}
