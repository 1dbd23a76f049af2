"""Experiment and variant lifecycle in the pure processor (lola.stream.lifecycle)."""

from __future__ import annotations

import orjson

from lola.stream.processor import ShardProcessor
from lola.stream.shard import ProcessorConfig


def rec(offset: int, **event) -> tuple[int, bytes, bytes]:
    return (offset, event["experiment_id"].encode(), orjson.dumps(event))


def exp_ev(o, action, exp="e", **kw):
    return rec(o, type="experiment", experiment_id=exp, action=action, **kw)


def var(o, vid, exp="e", **kw):
    return rec(o, type="variant", experiment_id=exp, variant_id=vid, text=f"text {vid}", **kw)


def imp(o, vid, eid, ts, exp="e"):
    return rec(o, type="impression", experiment_id=exp, variant_id=vid, event_id=eid, ts=ts)


def req(o, rid, exp="e"):
    return rec(o, type="decision_request", experiment_id=exp, request_id=rid)


def arm_counts(snap):
    return {v: {k: a[k] for k in ("impressions", "clicks", "conversions")} for v, a in snap["arms"].items()}


def reasons(out):
    return [(d.offset, d.reason) for d in out.dead_letters]


def chosen(out):
    return [orjson.loads(v)["variant_id"] for _, v in out.decisions]


class Gate:
    def __init__(self, answers):
        self.answers = answers

    def check(self, experiment_id, variant_id, text):
        return self.answers.get(variant_id, ("active", None))


def test_create_update_and_implicit_creation():
    proc = ShardProcessor(0)
    out = proc.process([exp_ev(0, "create", settings={"policy": "ucb", "attribution_window_s": 60}),
                        exp_ev(1, "create"),  # again: a no-op
                        var(2, "a"), var(3, "b"),
                        exp_ev(4, "update", settings={"alpha": 0.5, "attribution_window_s": 120}),
                        exp_ev(5, "update", settings={"policy": "ts"}),
                        exp_ev(6, "pause", exp="nobody"),
                        var(7, "a", exp="implicit")], now=1000.0)
    assert reasons(out) == [(5, "invalid_settings"), (6, "unknown_experiment")]
    e = proc.experiments["e"]
    assert proc.state.params(e.row).alpha == 0.5 and e.attribution_window_s == 120
    assert proc.snapshot("e")["status"] == "running" and "implicit" in proc.experiments


def test_pause_freezes_learning_but_serves_resume_learns_again():
    proc = ShardProcessor(0)
    proc.process([var(0, "a"), var(1, "b")])
    out = proc.process([exp_ev(2, "pause"), imp(3, "a", "i1", 10.0), req(4, "r1")])
    assert out.counts.get("ignored") == 1 and len(out.decisions) == 1
    assert arm_counts(proc.snapshot("e"))["a"]["impressions"] == 0
    assert proc.snapshot("e")["status"] == "paused"
    out = proc.process([imp(5, "a", "i1", 10.0), exp_ev(6, "resume"), imp(7, "a", "i2", 11.0)])
    assert out.duplicates == {"impression": 1}  # de-duplicated even while paused
    assert arm_counts(proc.snapshot("e"))["a"]["impressions"] == 1


def test_stop_serves_the_best_arm_with_certainty_and_stops_learning():
    proc = ShardProcessor(0)
    proc.process([var(0, "a"), var(1, "b")])
    events = [imp(2 + i, "b", f"i{i}", 10.0 + i) for i in range(5)]
    events += [rec(7, type="click", experiment_id="e", variant_id="b", event_id="c", ts=20.0, impression_id="i0")]
    proc.process(events)
    out = proc.process([exp_ev(8, "stop", reason="winner"), req(9, "r1"), req(10, "r2"), imp(11, "a", "x", 30.0)])
    assert chosen(out) == ["b", "b"]
    assert [orjson.loads(v)["propensity"] for _, v in out.decisions] == [1.0, 1.0]
    snap = proc.snapshot("e")
    assert snap["status"] == "stopped" and snap["arms"]["b"]["active"] and not snap["arms"]["a"]["active"]
    assert snap["arms"]["a"]["state"] == "active" and snap["arms"]["b"]["serving_share"] == 1.0
    assert arm_counts(snap)["a"]["impressions"] == 0
    assert reasons(proc.process([exp_ev(12, "pause")])) == [(12, "invalid_transition")]
    proc.process([exp_ev(13, "resume")])
    assert proc.snapshot("e")["status"] == "running"


def test_archive_publishes_a_final_snapshot_then_evicts_after_the_window():
    proc = ShardProcessor(0)
    proc.process([var(0, "a", settings={"attribution_window_s": 100}), var(1, "a", exp="keep")], now=1000.0)
    out = proc.process([exp_ev(2, "archive"), req(3, "r"), imp(4, "a", "i", 1000.0), var(5, "z")], now=1001.0)
    assert sorted(reasons(out)) == [(3, "experiment_archived"), (5, "invalid_transition")]
    assert "e" in out.dirty and proc.snapshot("e")["status"] == "archived"
    assert not proc.snapshot("e")["arms"]["a"]["active"]
    out = proc.process([imp(6, "a", "k", 1050.0, exp="keep")], now=1050.0)
    assert not out.evicted and "e" in proc.experiments
    out = proc.process([imp(7, "a", "k2", 1102.0, exp="keep")], now=1102.0)  # log time 1102 >= 1001 + 100
    assert out.evicted == ["e"] and "e" not in proc.experiments
    assert arm_counts(proc.snapshot("keep"))["a"]["impressions"] == 2  # the row that moved kept its counts
    assert reasons(proc.process([req(8, "r2")], now=1103.0)) == [(8, "unknown_experiment")]


def test_variant_states_gate_pending_blocked_and_set_state():
    proc = ShardProcessor(0, gate=Gate({"p": ("pending", "waiting for review"), "x": ("blocked", "claims")}))
    out = proc.process([var(0, "a"), var(1, "p"), var(2, "x")])
    assert reasons(out) == [(2, "noncompliant")]
    assert {r.variant_id for r in out.prior_requests} == {"a", "p"}
    arms = proc.snapshot("e")["arms"]
    assert [(arms[v]["state"], arms[v]["active"]) for v in "apx"] == [("active", True), ("pending", False),
                                                                       ("blocked", False)]
    assert arms["x"]["state_reason"] == "claims"
    out = proc.process([req(3 + i, f"r{i}") for i in range(20)])
    assert set(chosen(out)) == {"a"}
    assert proc.set_variant_state("e", "p", "active")
    assert not proc.set_variant_state("e", "p", "active")  # unchanged
    proc.process([rec(30, type="variant", action="retire", experiment_id="e", variant_id="a", text="")])
    assert not proc.set_variant_state("e", "a", "active")  # retired is final
    out = proc.process([req(31 + i, f"s{i}") for i in range(10)])
    assert set(chosen(out)) == {"p"}
    proc.set_variant_state("e", "p", "blocked", "re-check failed")
    assert reasons(proc.process([req(50, "t")])) == [(50, "no_active_variant")]


def test_retired_arms_are_freed_after_the_window_and_states_survive_a_checkpoint():
    proc = ShardProcessor(0, gate=Gate({"p": ("pending", None)}))
    proc.process([var(0, "a", settings={"attribution_window_s": 50}), var(1, "b"), var(2, "p"),
                  imp(3, "b", "i", 10.0)], now=100.0)
    proc.process([rec(4, type="variant", action="retire", experiment_id="e", variant_id="a", text="")], now=100.0)
    back = ShardProcessor.from_checkpoint(proc.to_checkpoint("t"))
    for p in (proc, back):
        assert [(v, a["state"]) for v, a in p.snapshot("e")["arms"].items()] == [
            ("a", "retired"), ("b", "active"), ("p", "pending")]
        p.process([imp(5, "b", "j", 11.0)], now=151.0)
        snap = p.snapshot("e")
        assert list(snap["arms"]) == ["b", "p"] and arm_counts(snap)["b"]["impressions"] == 2
        assert p.state.n_arms[p.experiments["e"].row] == 2


def test_limits_give_capacity_dead_letters():
    proc = ShardProcessor(0, ProcessorConfig(max_experiments=2, max_arms=2))
    out = proc.process([var(0, "a"), var(1, "b"), var(2, "c"), var(3, "a", exp="f"), var(4, "a", exp="g"),
                        exp_ev(5, "create", exp="h")])
    assert reasons(out) == [(2, "capacity"), (4, "capacity"), (5, "capacity")]


def test_created_and_archived_experiments_leave_memory_and_checkpoint_at_baseline():
    proc = ShardProcessor(0)
    proc.process([var(0, "a", exp="base"), var(1, "b", exp="base")], now=0.0)
    base_state, base_ckpt = proc.state.nbytes(), len(proc.to_checkpoint("t"))
    o, n = 2, 3000
    recs = []
    for i in range(n):
        e = f"x{i}"
        recs += [var(o, "a", exp=e, settings={"attribution_window_s": 1}), var(o + 1, "b", exp=e),
                 exp_ev(o + 2, "archive", exp=e)]
        o += 3
    proc.process(recs, now=10.0)
    assert len(proc.experiments) == n + 1 and proc.state.nbytes() > 10 * base_state
    out = proc.process([imp(o, "a", "late", 5.0, exp="base")], now=20.0)
    assert len(out.evicted) == n and list(proc.experiments) == ["base"]
    assert proc.state.nbytes() <= 1.1 * base_state
    # the registry's dicts were rebuilt at their new size (a dict never shrinks by deletion)
    import sys
    assert max(map(sys.getsizeof, (proc.experiments, proc.by_row, proc.expiring, proc.stats._stats))) < 1024
    assert len(proc.to_checkpoint("t")) <= 1.1 * base_ckpt + 200  # + the one new dedup entry


def test_eviction_drops_the_experiments_cached_statistics_and_winner():
    proc = ShardProcessor(0)
    proc.process([var(0, "a", exp="x", settings={"attribution_window_s": 1}), var(1, "b", exp="x"),
                  var(2, "a", exp="base")], now=0.0)
    proc.snapshot("x", now=1.0)  # computes and caches x's statistics
    assert "x" in proc.stats._stats
    proc.process([exp_ev(3, "archive", exp="x")], now=2.0)
    out = proc.process([imp(4, "a", "late", 5.0, exp="base")], now=20.0)
    assert out.evicted == ["x"] and "x" not in proc.stats._stats and "x" not in proc.stats._winners


def test_a_record_that_does_not_decode_leaves_no_reference_cycle():
    """Stored decode errors are dead-lettered, never re-raised: a raised exception's traceback
    would hold the batch's frame, and with it every record of the batch, until a full GC."""
    import gc

    def garbage_after(batch):  # objects only a full collection frees, left by one batch
        proc = ShardProcessor(0)
        proc.process([var(0, "a", exp="e")], now=0.0)
        gc.collect()
        gc.disable()
        try:
            out = proc.process(batch, now=2.0)
            return out, gc.collect()
        finally:
            gc.enable()

    _, good = garbage_after([imp(1, "a", "i1", 1.0, exp="e"), imp(2, "a", "i2", 1.0, exp="e")])
    out, bad = garbage_after([(1, b"e", b"{not json"), imp(2, "a", "i2", 1.0, exp="e")])
    assert [d.reason for d in out.dead_letters] == ["invalid_json"] and bad <= good


def test_experiments_that_lived_and_were_evicted_leave_no_python_object_behind():
    """Every per-experiment structure (registry, statistics cache, edge rates, ...) forgets an
    evicted experiment: a few objects left per experiment pin whole allocator arenas, so the
    worker's memory would stay at its peak after 100k experiments (bench lifecycle)."""
    import gc
    import sys

    proc = ShardProcessor(0, ProcessorConfig(request_memory=100))  # the request window fills in the warm-up
    proc.process([var(0, "a", exp="base"), var(1, "b", exp="base")], now=0.0)
    o = 2

    def live_and_evict(first: int, n: int, t: float) -> None:
        nonlocal o
        recs = []
        for i in range(first, first + n):
            e = f"x{i}"
            recs += [var(o, "a", exp=e, settings={"attribution_window_s": 1}), var(o + 1, "b", exp=e),
                     req(o + 2, f"r{i}", exp=e), imp(o + 3, "a", f"i{i}", t, exp=e)]
            o += 4
        proc.process(recs, now=t)
        for i in range(first, first + n):
            proc.snapshot(f"x{i}", now=t)  # what the worker publishes for each dirty experiment
        proc.process([exp_ev(o + k, "archive", exp=f"x{i}") for k, i in enumerate(range(first, first + n))], now=t)
        o += n
        out = proc.process([imp(o, "a", f"late{first}", t + 5.0, exp="base")], now=t + 5.0)
        o += 1
        assert len(out.evicted) == n and list(proc.experiments) == ["base"]
        proc.mark()  # a checkpoint: the fault-isolation journal lets go of the records

    live_and_evict(0, 200, 10.0)  # warm: caches and windows that are bounded, not per experiment
    gc.collect()
    before = sys.getallocatedblocks()
    n = 2000
    live_and_evict(200, n, 20.0)
    gc.collect()
    left = sys.getallocatedblocks() - before
    assert left < n // 10, f"{left} objects left by {n} evicted experiments"
