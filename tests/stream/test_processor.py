"""Pure tests of the shard processor: exactly-once replay, dedup, attribution, hostile input."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lola.errors import LolaError
from lola.kernels import ExperimentParams
from lola.stream.loadgen import open_stream
from lola.stream.context import redact
from lola.stream.processor import ShardProcessor
from lola.stream.shard import ProcessorConfig
from lola.stream.snapshot import counts_view


def counts(proc: ShardProcessor) -> dict:
    snaps = {e: proc.snapshot(e) for e in proc.experiments}
    return counts_view(snaps)


def records_of(stream) -> list[tuple[int, bytes, bytes]]:
    return [(i, k, v) for i, (k, v) in enumerate(stream.records)]


def rec(offset: int, **event) -> tuple[int, bytes, bytes]:
    return offset, event["experiment_id"].encode(), orjson.dumps(event)


def variant(offset, exp="e", vid="a", **kw):
    return rec(offset, type="variant", experiment_id=exp, variant_id=vid, text=f"text {vid}", **kw)


def test_open_stream_counts_are_exact_with_duplicates_and_malformed():
    stream = open_stream(3000, 4, 3, seed=3, duplicate_rate=0.1, malformed_rate=0.05)
    proc = ShardProcessor(0)
    out = proc.process(records_of(stream))
    assert counts(proc) == stream.truth
    assert len(out.dead_letters) == stream.summary["malformed"]
    assert sum(out.duplicates.values()) == stream.summary["duplicates"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 900), min_size=1, max_size=6),
       batch=st.integers(1, 400))
def test_crash_and_restore_at_any_point_gives_exact_counts(seed, cuts, batch):
    """Process, checkpoint, process more (lost in the crash), restore, go on: exact counts."""
    stream = open_stream(700, 3, 2, seed=seed, duplicate_rate=0.1, malformed_rate=0.02)
    recs = records_of(stream)
    checkpoint = ShardProcessor(0).to_checkpoint("t")
    position = 0
    for cut in sorted(set(cuts)):
        proc = ShardProcessor.from_checkpoint(checkpoint)
        position = proc.next_offset
        # Processing from the restored offset up to the checkpoint point, then more that is lost.
        while position < min(cut, len(recs)):
            proc.process(recs[position:position + batch])
            position += batch
        checkpoint = proc.to_checkpoint("t")
        proc.process(recs[position:position + batch * 2])  # work after the checkpoint: lost on "kill -9"
    proc = ShardProcessor.from_checkpoint(checkpoint)
    # The consumer re-delivers from before the checkpoint too: records below next_offset are skipped.
    for start in range(0, len(recs), batch):
        proc.process(recs[start:start + batch])
    assert counts(proc) == stream.truth


def test_duplicates_within_the_time_window_are_dropped_older_events_are_stale():
    proc = ShardProcessor(0, ProcessorConfig(dedup_window_s=100.0))
    proc.process([variant(0)])
    imp = lambda o, eid, ts: rec(o, type="impression", experiment_id="e", variant_id="a", event_id=eid, ts=ts)
    out = proc.process([imp(1, "x", 1.0), imp(2, "x", 1.0), imp(3, "y", 50.0), imp(4, "z", 200.0), imp(5, "x", 1.0),
                        imp(6, "w", 99.0), imp(7, "v", 101.0)])
    # The window is asked about a batch when it begins and evicts at its end: within the batch
    # the re-sent x (offset 5) is still remembered, a duplicate; w (ts 99) is at or below the
    # horizon 100 that z (ts 200) set, so it cannot be checked and is dead-lettered stale.
    assert out.duplicates == {"impression": 2}
    assert [(d.offset, d.reason) for d in out.dead_letters] == [(6, "stale")]
    # x and y left the 100 s window at the batch's end: x re-sent now is stale, never counted twice.
    again = proc.process([imp(8, "x", 1.0), imp(9, "z", 200.0)])
    assert [(d.offset, d.reason) for d in again.dead_letters] == [(8, "stale")] and again.duplicates == {"impression": 1}
    assert counts(proc)["e"]["a"]["impressions"] == 4


def test_dedup_keys_by_experiment_and_type_and_the_budget_shrinks_the_window():
    proc = ShardProcessor(0, ProcessorConfig(dedup_budget_bytes=1024))  # 23 entries
    proc.process([variant(0), rec(1, type="variant", experiment_id="f", variant_id="a", text="t")])
    same = [rec(2, type="impression", experiment_id="e", variant_id="a", event_id="id", ts=10.0),
            rec(3, type="impression", experiment_id="f", variant_id="a", event_id="id", ts=10.0),
            rec(4, type="click", experiment_id="e", variant_id="a", event_id="id", ts=11.0)]
    out = proc.process(same)
    assert not out.duplicates and not out.dead_letters
    many = [rec(5 + i, type="impression", experiment_id="e", variant_id="a", event_id=f"m{i}", ts=20.0 + i)
            for i in range(40)]
    out = proc.process(many)
    assert out.budget_evictions > 0 and len(proc.seen) == proc.seen.capacity and proc.seen.nbytes <= 1024 + 80
    again = proc.process([rec(100, type="impression", experiment_id="e", variant_id="a", event_id="id", ts=10.0)])
    assert [d.reason for d in again.dead_letters] == ["stale"]  # dropped early by the budget: never counted twice
    assert counts(proc)["e"]["a"]["impressions"] == 41


def test_clicks_per_impression_are_capped_and_duplicates_are_sampled_to_dead_letters():
    proc = ShardProcessor(0, ProcessorConfig(duplicate_dead_letter_every=2))
    proc.process([variant(0)])
    out = proc.process([
        rec(1, type="impression", experiment_id="e", variant_id="a", event_id="i", ts=10.0),
        rec(2, type="click", experiment_id="e", variant_id="a", event_id="c1", ts=11.0, impression_id="i"),
        rec(3, type="click", experiment_id="e", variant_id="a", event_id="c2", ts=12.0, impression_id="i"),
        rec(4, type="click", experiment_id="e", variant_id="a", event_id="c1", ts=11.0, impression_id="i"),
        rec(5, type="click", experiment_id="e", variant_id="a", event_id="c1", ts=11.0, impression_id="i")])
    assert [(d.offset, d.reason) for d in out.dead_letters] == [(3, "click_cap"), (5, "duplicate")]
    assert out.duplicates == {"click": 2}
    assert counts(proc)["e"]["a"] == {"impressions": 1, "clicks": 1, "conversions": 0}


def test_late_clicks_go_to_dead_letters_with_reason():
    proc = ShardProcessor(0)
    proc.process([variant(0, settings={"attribution_window_s": 100})])
    out = proc.process([
        rec(1, type="impression", experiment_id="e", variant_id="a", event_id="i1", ts=1000.0, request_id="r1"),
        rec(2, type="click", experiment_id="e", variant_id="a", event_id="c1", ts=1050.0, impression_id="i1"),
        rec(3, type="click", experiment_id="e", variant_id="a", event_id="c2", ts=1200.0, impression_id="i1"),
        rec(4, type="click", experiment_id="e", variant_id="a", event_id="c3", ts=1150.0, request_id="r1"),
        rec(5, type="impression", experiment_id="e", variant_id="a", event_id="i2", ts=5000.0),
        rec(6, type="click", experiment_id="e", variant_id="a", event_id="c4", ts=4000.0),  # no reference
        rec(7, type="click", experiment_id="e", variant_id="a", event_id="c5", ts=4950.0),
    ])
    assert [(d.offset, d.reason) for d in out.dead_letters] == [(3, "late_click"), (4, "late_click"),
                                                                 (6, "late_click")]
    assert counts(proc)["e"]["a"] == {"impressions": 2, "clicks": 2, "conversions": 0}


def test_conversions_name_their_impression_and_are_attributed_like_clicks():
    proc = ShardProcessor(0)
    proc.process([variant(0, settings={"attribution_window_s": 100})])
    conv = lambda o, eid, ts, **ref: rec(o, type="conversion", experiment_id="e", variant_id="a", event_id=eid,
                                         ts=ts, value=2.5, **ref)
    out = proc.process([
        rec(1, type="impression", experiment_id="e", variant_id="a", event_id="i1", ts=1000.0, request_id="r1"),
        rec(2, type="impression", experiment_id="e", variant_id="a", event_id="i2", ts=1090.0),
        conv(3, "v1", 1080.0, impression_id="i1"),   # within 100 s of its impression
        conv(4, "v2", 1150.0, impression_id="i1"),   # 150 s after its impression: late
        conv(5, "v3", 1095.0, request_id="r1"),      # named by request_id, within the window
        conv(6, "v4", 1120.0, request_id="r1"),      # 120 s after: late, though newer than newest - window
    ])
    assert [(d.offset, d.reason) for d in out.dead_letters] == [(4, "late_conversion"), (6, "late_conversion")]
    assert counts(proc)["e"]["a"]["conversions"] == 5.0


def test_unknown_experiment_and_variant_are_dead_lettered_not_dropped():
    proc = ShardProcessor(0)
    proc.process([variant(0)])
    out = proc.process([
        rec(1, type="click", experiment_id="nope", variant_id="a", event_id="c1", ts=1.0),
        rec(2, type="click", experiment_id="e", variant_id="zz", event_id="c2", ts=1.0),
        rec(3, type="decision_request", experiment_id="nope", request_id="r"),
        rec(4, type="variant", experiment_id="e", variant_id="zz", text="t", action="retire"),
    ])
    assert [d.reason for d in out.dead_letters] == ["unknown_experiment", "unknown_variant",
                                                    "unknown_experiment", "unknown_variant"]
    assert all(d.value for d in out.dead_letters)  # the original bytes travel with the reason


def test_invalid_experiment_settings_are_dead_lettered():
    proc = ShardProcessor(0)
    out = proc.process([variant(0, settings={"policy": "nonsense"}), variant(1, exp="f", settings={"gamma": 5.0})])
    assert [d.reason for d in out.dead_letters] == ["invalid_settings", "invalid_settings"]
    assert proc.experiments == {}


def test_bai_settings_reach_the_kernel_params():
    proc = ShardProcessor(0)
    out = proc.process([variant(0, settings={"policy": "llm_bai", "bai_radius": "bernstein", "bai_gamma": 0.01}),
                        variant(1, exp="f", settings={"policy": "bai", "bai_radius": "kl"})])
    params = proc.state.params(proc.experiments["e"].row)
    assert (params.policy, params.bai_radius, params.bai_gamma) == ("llm_bai", "bernstein", 0.01)
    assert [d.reason for d in out.dead_letters] == ["invalid_settings"] and "f" not in proc.experiments


def test_decisions_name_active_variants_and_retries_get_the_same_answer():
    proc = ShardProcessor(0)
    proc.process([variant(0, vid="a"), variant(1, vid="b"),
                  rec(2, type="variant", experiment_id="e", variant_id="a", text="x", action="retire")])
    out = proc.process([rec(3 + i, type="decision_request", experiment_id="e", request_id=f"r{i}")
                        for i in range(20)])
    decisions = [orjson.loads(v) for _, v in out.decisions]
    assert [d["request_id"] for d in decisions] == [f"r{i}" for i in range(20)]
    assert {d["variant_id"] for d in decisions} == {"b"}
    assert all(d["propensity"] == 1.0 and d["policy"] == "llm2ucb" for d in decisions)
    again = proc.process([rec(40, type="decision_request", experiment_id="e", request_id="r3")])
    assert again.duplicates == {"decision_request": 1} and orjson.loads(again.decisions[0][1])["variant_id"] == "b"
    proc.process([rec(41, type="variant", experiment_id="e", variant_id="b", text="x", action="retire")])
    none_left = proc.process([rec(42, type="decision_request", experiment_id="e", request_id="r99")])
    assert [d.reason for d in none_left.dead_letters] == ["no_active_variant"]


def test_priors_are_requested_applied_and_asked_again_after_restore():
    proc = ShardProcessor(0)
    out = proc.process([variant(0, vid="a"), variant(1, vid="b"), variant(2, vid="a")])
    assert [(r.variant_id, r.text) for r in out.prior_requests] == [("a", "text a"), ("b", "text b")]
    assert proc.apply_prior("e", "a", 0.25)
    assert not proc.apply_prior("e", "gone", 0.25)
    restored = ShardProcessor.from_checkpoint(proc.to_checkpoint("t"))
    assert [r.variant_id for r in restored.missing_priors()] == ["b"]
    assert restored.snapshot("e")["arms"]["a"]["prior"] == 0.25


def test_checkpoint_rejects_foreign_bytes():
    with pytest.raises(LolaError, match="bad magic"):
        ShardProcessor.from_checkpoint(b"not a checkpoint")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=80) | st.dictionaries(st.sampled_from(
    ["type", "event_id", "experiment_id", "variant_id", "ts", "value", "impression_id"]),
    st.none() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=6) | st.sampled_from(
        ["impression", "click", "conversion", "e0", "v0"])).map(orjson.dumps), max_size=30),
    st.integers(0, 1000))
def test_hostile_messages_never_disturb_valid_counts(hostile, seed):
    from lola.errors import EventError
    from lola.stream.events import decode

    def is_bad(key, value):
        try:
            decode(value, key)
        except EventError:
            return True
        return False

    hostile = [h for h in hostile if is_bad(b"e-0", h)]
    stream = open_stream(300, 2, 2, seed=seed, duplicate_rate=0.0, malformed_rate=0.0, prefix="e")
    mixed, hostile_at = [], set()
    pending = list(hostile)
    for i, (k, v) in enumerate(stream.records):
        mixed.append((k, v))
        if i % 7 == 3 and pending:
            hostile_at.add(len(mixed))
            mixed.append((b"e-0", pending.pop()))
    for h in pending:
        hostile_at.add(len(mixed))
        mixed.append((b"e-0", h))
    proc = ShardProcessor(0)
    out = proc.process([(i, k, v) for i, (k, v) in enumerate(mixed)])
    assert counts(proc) == stream.truth
    assert {d.offset for d in out.dead_letters} == hostile_at
    for d in out.dead_letters:
        assert d.value == redact(mixed[d.offset][1]) and d.reason  # raw user context never kept


def test_settings_the_policy_does_not_read_are_invalid_and_kernel_settings_pass():
    proc = ShardProcessor(0)
    out = proc.process([variant(0, settings={"policy": "llm2ucb", "bai_delta": 0.1}),
                        variant(1, exp="f", settings={"policy": "ts", "horizon": 500, "ts_alpha0": 1.38,
                                                      "min_traffic": 0.1, "burn_in": 20})])
    assert [d.reason for d in out.dead_letters] == ["invalid_settings"] and "e" not in proc.experiments
    assert "does not use bai_delta" in out.dead_letters[0].detail
    params = proc.state.params(proc.experiments["f"].row)
    assert (params.policy, params.horizon, params.ts_alpha0, params.min_traffic, params.burn_in) == \
        ("ts", 500, 1.38, 0.1, 20)
    assert params.alpha == ExperimentParams().alpha  # the worker's default alpha is not forced onto TS


def test_bai_snapshot_carries_the_good_set_done_and_recommendation():
    proc = ShardProcessor(0)
    recs = [variant(0, settings={"policy": "bai"}), variant(1, vid="b")]
    recs += [rec(i, type="impression", experiment_id="e", variant_id="ab"[i % 2], event_id=f"i{i}", ts=1.0)
             for i in range(2, 400)]
    assert proc.process(recs[:2]).dead_letters == []
    snap = proc.snapshot("e")
    assert snap["bai"] == {"done": False, "good_set": ["a", "b"], "recommendation": ["a", "b"]}
    recs += [rec(i, type="click", experiment_id="e", variant_id="a", event_id=f"c{i}", ts=1.0) for i in range(400, 500)]
    assert proc.process(recs[2:]).dead_letters == []
    snap = proc.snapshot("e")
    assert snap["bai"] == {"done": True, "good_set": ["a"], "recommendation": ["a"]}
    assert snap["arms"]["a"]["serving_share"] == 1.0 and snap["arms"]["b"]["serving_share"] == 0.0
    assert snap["ope"] == {"needs_floor": True, "min_traffic": 0.0, "supported": False}


def test_snapshot_says_whether_off_policy_evaluation_is_supported():
    proc = ShardProcessor(0)
    proc.process([variant(0, exp="t", settings={"policy": "ts"}), variant(1, exp="f", settings={"min_traffic": 0.05})])
    assert proc.snapshot("t")["ope"] == {"needs_floor": False, "min_traffic": 0.0, "supported": True}
    assert proc.snapshot("f")["ope"] == {"needs_floor": True, "min_traffic": 0.05, "supported": True}
