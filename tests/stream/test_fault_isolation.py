"""Issue 15, pure: bounds before applying, and per-batch fault isolation with exact counts."""

from __future__ import annotations

import orjson
import pytest

from lola.stream.loadgen import open_stream
from lola.stream.processor import ShardProcessor
from lola.stream.snapshot import counts_view


def counts(proc: ShardProcessor) -> dict:
    return counts_view({e: proc.snapshot(e) for e in proc.experiments})


def rec(offset: int, **event) -> tuple[int, bytes, bytes]:
    return offset, event["experiment_id"].encode(), orjson.dumps(event)


def setup(proc, policy="llm2ucb", **settings):
    out = proc.process([rec(0, type="variant", experiment_id="e", variant_id="a", text="a",
                            settings={"policy": policy, **settings}),
                        rec(1, type="variant", experiment_id="e", variant_id="b", text="b"),
                        rec(2, type="variant", experiment_id="e", variant_id="c", text="c")])
    assert not out.dead_letters, out.dead_letters
    return 3


def reasons(out):
    return [(d.offset, d.reason) for d in out.dead_letters]


def test_issue_poison_conversions_are_dead_letters_and_the_experiment_keeps_serving():
    """Two conversions worth 1e308, then the other arms retired: used to crash select."""
    proc = ShardProcessor(0)
    o = setup(proc, conversion_weight=1.0)
    out = proc.process([rec(o, type="conversion", experiment_id="e", variant_id="a", event_id="c1", value=1e308, ts=1),
                        rec(o + 1, type="conversion", experiment_id="e", variant_id="a", event_id="c2", value=1e308,
                            ts=2),
                        rec(o + 2, type="variant", experiment_id="e", variant_id="b", text="b", action="retire"),
                        rec(o + 3, type="variant", experiment_id="e", variant_id="c", text="c", action="retire"),
                        rec(o + 4, type="decision_request", experiment_id="e", request_id="r1")])
    assert reasons(out) == [(o, "invalid_value"), (o + 1, "invalid_value")]
    assert len(out.decisions) == 1
    assert proc.snapshot("e")["arms"]["a"]["serving_share"] == 1.0


@pytest.mark.parametrize("settings", [{"conversion_weight": 1.7e308}, {"n_aux": 2**63 - 1, "policy": "llm_bai"},
                                      {"alpha": 1e300}, {"gamma": 1e-300}, {"attribution_window_s": 1e300}])
def test_out_of_bound_settings_are_dead_letters(settings):
    proc = ShardProcessor(0)
    out = proc.process([rec(0, type="variant", experiment_id="e", variant_id="a", text="a", settings=settings)])
    assert [d.reason for d in out.dead_letters] in (["invalid_settings"], ["invalid_value"])
    assert "e" not in proc.experiments


def test_far_future_ts_is_a_dead_letter_and_ts_below_the_dedup_horizon_are_stale():
    proc = ShardProcessor(0)
    o = setup(proc)
    now = 1_800_000_000.0
    imp = dict(type="impression", experiment_id="e", variant_id="a")
    out = proc.process([rec(o, **imp, event_id="far", ts=1e30),            # beyond MAX_TS
                        rec(o + 1, **imp, event_id="ms", ts=now * 1000),    # milliseconds sent as seconds
                        rec(o + 2, **imp, event_id="soon", ts=now + 3600),  # an hour ahead > 300 s skew
                        rec(o + 3, **imp, event_id="ok", ts=now + 60),      # within the skew
                        rec(o + 4, **imp, event_id="old", ts=1_000_000_000.0)], now=now)
    # an old ts is legal on its own, but not below the partition's de-duplication horizon (stale)
    assert reasons(out) == [(o, "invalid_value"), (o + 1, "invalid_value"), (o + 2, "future_ts"), (o + 4, "stale")]
    assert proc.experiments["e"].max_ts == now + 60
    # a click without impression id an hour later is still on time (max_ts was not poisoned)
    late = proc.process([rec(o + 5, type="click", experiment_id="e", variant_id="a", event_id="k", ts=now - 10)],
                        now=now)
    assert not late.dead_letters


def test_future_ts_is_judged_against_the_kafka_timestamp_when_given():
    proc = ShardProcessor(0)
    o = setup(proc)
    imp = dict(type="impression", experiment_id="e", variant_id="a")
    # The worker's clock is far ahead (a replay hours later); the record's own timestamp decides.
    out = proc.process([rec(o, **imp, event_id="x", ts=1000.0 + 3600), rec(o + 1, **imp, event_id="y", ts=1000.0)],
                       now=10_000_000.0, timestamps=[1000.0, 1000.0])
    assert reasons(out) == [(o, "future_ts")]


def _stream_with_poison(seed=5):
    stream = open_stream(1500, 3, 3, seed=seed, duplicate_rate=0.05, malformed_rate=0.0)
    recs = [(i, k, v) for i, (k, v) in enumerate(stream.records)]
    return stream, recs


@pytest.mark.parametrize("batch", [1, 37, 500, 5000])
def test_a_batch_whose_update_raises_is_rolled_back_and_reapplied_record_by_record(kernel_bug_on, batch):
    """A kernel bug on one record: that record is a processing_error, the rest count exactly once.

    The fake bug fires after the real update has written the whole batch into the state
    (the worst case: a half-applied batch), whenever the victim record is in the call.
    """
    stream, recs = _stream_with_poison()
    victim = next(i for i, (_, _, v) in enumerate(recs) if i > 700 and b'"click"' in v)
    victim_value = recs[victim][2]
    kernel_bug_on(victim_value)
    proc = ShardProcessor(0)
    letters = []
    prior_at = 600 - 600 % batch
    for start in range(0, len(recs), batch):
        out = proc.process(recs[start:start + batch], now=2e9)
        letters += out.dead_letters
        if start == prior_at:  # a prior applied between batches must survive a rollback
            assert proc.apply_prior("exp-0", "v0", 0.123)
    assert [(d.offset, d.reason) for d in letters] == [(victim, "processing_error")]
    assert "ZeroDivisionError" in letters[0].detail
    truth = stream.truth
    event = orjson.loads(victim_value)
    truth[event["experiment_id"]][event["variant_id"]]["clicks"] -= 1
    assert counts(proc) == truth
    assert proc.next_offset == len(recs) and proc.rollbacks >= 2
    assert proc.snapshot("exp-0")["arms"]["v0"]["prior"] == 0.123


def test_isolation_survives_an_exception_while_registering_a_variant(monkeypatch):
    import lola.kernels as K

    proc = ShardProcessor(0)
    o = setup(proc)
    real = K.ExperimentParams.from_dict

    def exploding(data):
        if data.get("alpha") == 0.0123:
            raise RuntimeError("boom")
        return real(data)

    monkeypatch.setattr(K.ExperimentParams, "from_dict", exploding)
    out = proc.process([rec(o, type="impression", experiment_id="e", variant_id="a", event_id="i1", ts=1),
                        rec(o + 1, type="variant", experiment_id="f", variant_id="a", text="x",
                            settings={"alpha": 0.0123}),
                        rec(o + 2, type="impression", experiment_id="e", variant_id="b", event_id="i2", ts=1)],
                       now=2e9)
    assert reasons(out) == [(o + 1, "processing_error")] and "RuntimeError" in out.dead_letters[0].detail
    assert counts(proc)["e"]["a"]["impressions"] == 1 and counts(proc)["e"]["b"]["impressions"] == 1
    assert "f" not in proc.experiments and proc.rollbacks == 2


def test_a_rollback_to_a_held_restore_point_with_deltas_keeps_the_window_exact(monkeypatch, kernel_bug_on):
    """The restore point is held without its window (a copy in the backup ring instead) and
    the deltas since: a rollback rebuilds both, so re-sent events stay duplicates."""
    from lola.stream.delta import ChainTracker
    from lola.stream.shard_checkpoint import HELD, checkpoint_meta

    stream, recs = _stream_with_poison(seed=9)
    victim = next(i for i, (_, _, v) in enumerate(recs) if i > 1000 and b'"impression"' in v)
    victim_value = recs[victim][2]
    kernel_bug_on(victim_value)
    real_rollback, rolled_back_over = ShardProcessor._rollback, []

    def rollback(self):
        rolled_back_over.append(len(self._restore_deltas))
        real_rollback(self)

    monkeypatch.setattr(ShardProcessor, "_rollback", rollback)
    proc = ShardProcessor(0)
    letters, duplicates, held_sizes = [], 0, set()
    tracker = None
    for j, start in enumerate(range(0, len(recs), 100)):
        out = proc.process(recs[start:start + 100], now=2e9)
        letters += out.dead_letters
        duplicates += sum(out.duplicates.values())
        if j % 4 == 0:
            proc.mark("events")
            assert checkpoint_meta(proc._restore_blob)["dedup"] == HELD
            held_sizes.add(len(proc._restore_blob) - len(proc.state.to_bytes()))
            tracker = ChainTracker(proc)
        elif tracker is not None:  # None: only a base follows a rollback (the chain policy)
            if proc.mark_delta(tracker, {"epoch": 1, "owner": "t", "j": j, "topic": "events"}) is None:
                proc.mark("events")
            tracker = ChainTracker(proc)
    assert [(d.offset, d.reason) for d in letters] == [(victim, "processing_error")]
    assert proc.rollbacks == 2 and rolled_back_over[0] >= 1  # the first to a held base and deltas after it
    assert duplicates == stream.summary["duplicates"]
    event = orjson.loads(victim_value)
    stream.truth[event["experiment_id"]][event["variant_id"]]["impressions"] -= 1
    assert counts(proc) == stream.truth
    # the held record's size does not follow the window's fill (registry and offsets only)
    assert max(held_sizes) - min(held_sizes) < 200, held_sizes
