"""Contextual experiments in the shard processor: featurizer, join window, learning, dead letters."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from lola.errors import EventError
from lola.stream.context import MAX_CONTEXT_FIELDS, ContextualSettings, Featurizer, FeatureSpec, redact
from lola.stream.join import JoinWindow
from lola.stream.processor import ShardProcessor
from lola.stream.shard import ProcessorConfig

SPEC = {"algorithm": "linucb", "alpha": 0.3, "n_aux": 0,
        "features": {"numeric": {"age": {"mean": 30, "scale": 10}}, "categorical": ["segment"]}}


def rec(offset, **event):
    return offset, event["experiment_id"].encode(), orjson.dumps(event)


def test_featurizer_scales_hashes_and_handles_missing_fields():
    f = Featurizer(FeatureSpec.model_validate(SPEC["features"]), 8)
    u = f({"age": 50, "segment": "s1", "other": [1, 2]})
    assert u.shape == (8,) and u[0] == 1.0 and u[1] == pytest.approx(2.0)
    assert np.abs(u[2:]).sum() == 1.0                        # one hashed bucket, sign +-1
    np.testing.assert_array_equal(u, f({"segment": "s1", "age": 50}))  # deterministic, order-free
    assert f({"age": 1e6})[1] == 5.0                        # clipped at clip = 5
    missing = f(None)
    assert missing[0] == 1.0 and not missing[1:].any()
    buckets = {int(np.flatnonzero(f({"segment": f"s{i}"})[2:])[0]) for i in range(40)}
    assert len(buckets) > 3                                  # segments spread over the 6 hash slots


@pytest.mark.parametrize("ctx, problem", [
    ({"age": "old"}, "must be a number"), ({"age": True}, "must be a number"), ({"age": float("nan")}, "not finite"),
    ({"segment": {"x": 1}}, "string or an integer"), ({"segment": "x" * 300}, "longer than"),
    ({f"f{i}": 1 for i in range(MAX_CONTEXT_FIELDS + 1)}, "fields >"),
])
def test_featurizer_rejects_bad_context_without_echoing_values(ctx, problem):
    f = Featurizer(FeatureSpec.model_validate(SPEC["features"]), 8)
    with pytest.raises(EventError) as err:
        f(ctx)
    assert err.value.reason == "bad_context" and problem in err.value.detail
    assert "old" not in err.value.detail and "xxx" not in err.value.detail


def test_settings_are_validated():
    with pytest.raises(EventError, match="invalid_settings|contextual"):
        ContextualSettings.parse({"algorithm": "thompson"}, 8)
    with pytest.raises(EventError):
        ContextualSettings.parse({"features": {"numeric": {f"n{i}": {} for i in range(7)}, "categorical": ["c"]}}, 8)
    assert ContextualSettings.parse({"features": {"version": 1}}, 8).features.version == 1


def test_redact_keeps_field_names_only():
    raw = orjson.dumps({"type": "decision_request", "user_id": "alice@example.com", "context": {"zip": "90210"}})
    out = orjson.loads(redact(raw))
    assert "alice" not in out["user_id"] and out["context"] == {"redacted_fields": ["zip"]}
    assert redact(b'{"type":"click"}') == b'{"type":"click"}'
    assert b"90210" not in redact(b'{"context":{"zip":"90210"}, broken')


def _setup(proc, exp="c", spec=SPEC, arms=("a", "b")):
    recs = [rec(i, type="variant", experiment_id=exp, variant_id=v, text=f"headline {v}",
                settings={"contextual": spec}) for i, v in enumerate(arms)]
    out = proc.process(recs, now=1000.0)
    assert not out.dead_letters
    return len(recs)


def test_contextual_experiment_learns_a_segment_dependent_best_arm():
    proc = ShardProcessor(0)
    off = _setup(proc)
    rng = np.random.default_rng(0)
    # premise: the two segments hash to different features (s0 and s1 collide in 6 buckets: docs/contextual.md)
    assert not np.array_equal(proc.ctx.featurize("c", {"segment": "young"}, None),
                              proc.ctx.featurize("c", {"segment": "old"}, None))
    ctr = {("young", "a"): 0.9, ("young", "b"): 0.1, ("old", "a"): 0.1, ("old", "b"): 0.9}
    picks = {"young": [], "old": []}
    for batch in range(30):
        segs = rng.choice(["young", "old"], 20)
        reqs = [rec(off + i, type="decision_request", experiment_id="c", request_id=f"r{batch}-{i}",
                    context={"segment": str(s), "age": float(rng.normal(30, 10))}) for i, s in enumerate(segs)]
        off += len(reqs)
        out = proc.process(reqs, now=1000.0 + batch)
        assert not out.dead_letters and len(out.decisions) == 20
        outcomes = []
        for (_, value), s in zip(out.decisions, segs):
            d = orjson.loads(value)
            assert d["policy"] == "ctx_linucb" and d["propensity"] in (0.5, 1.0)
            picks[str(s)].append(d["variant_id"])
            outcomes.append(dict(type="impression", experiment_id="c", variant_id=d["variant_id"],
                                 event_id="i" + d["request_id"], request_id=d["request_id"], ts=1000.0 + batch))
            if rng.random() < ctr[(str(s), d["variant_id"])]:
                outcomes.append(dict(type="click", experiment_id="c", variant_id=d["variant_id"],
                                     event_id="c" + d["request_id"], impression_id="i" + d["request_id"],
                                     ts=1000.0 + batch))
        proc.process([rec(off + i, **o) for i, o in enumerate(outcomes)], now=1000.0 + batch)
        off += len(outcomes)
    late = {s: p[-100:] for s, p in picks.items()}
    assert late["young"].count("a") > 0.8 * len(late["young"])
    assert late["old"].count("b") > 0.8 * len(late["old"])
    snap = proc.snapshot("c")
    assert snap["contextual"]["impressions"] == 600 and snap["contextual"]["never_joined"] == 0
    # exactly-once: a checkpoint restores the kernel state and the join window
    back = ShardProcessor.from_checkpoint(proc.to_checkpoint("t"))
    np.testing.assert_array_equal(back.ctx.state.theta[:1], proc.ctx.state.theta[:1])
    assert len(back.ctx.join.entries) == len(proc.ctx.join.entries)
    assert b"young" not in proc.to_checkpoint("t")


def test_bad_context_is_dead_lettered_redacted_and_the_shard_goes_on():
    proc = ShardProcessor(0)
    off = _setup(proc)
    bad = [rec(off, type="decision_request", experiment_id="c", request_id="r1", user_id="bob",
               context={"age": "secret-value"}),
           (off + 1, b"c", b'{"type":"decision_request","experiment_id":"c","request_id":"r2","context":{"age":1e999}}'),
           rec(off + 2, type="decision_request", experiment_id="c", request_id="r3",
               context={f"f{i}": 1 for i in range(MAX_CONTEXT_FIELDS + 1)}),
           rec(off + 3, type="decision_request", experiment_id="c", request_id="r4", context={"segment": "ok"})]
    out = proc.process(bad, now=1000.0)
    # JSON has no NaN and the decoder refuses 1e999 (invalid_json); the featurizer refuses non-finite values too
    assert [d.reason for d in out.dead_letters] == ["bad_context", "invalid_json", "bad_context"]
    assert all(b"secret-value" not in d.value and b"bob" not in d.value for d in out.dead_letters)
    assert len(out.decisions) == 1


def test_invalid_contextual_settings_are_dead_lettered():
    proc = ShardProcessor(0)
    out = proc.process([rec(0, type="variant", experiment_id="x", variant_id="a", text="t",
                            settings={"contextual": {"algorithm": "nope"}}),
                        rec(1, type="variant", experiment_id="y", variant_id="a", text="t",
                            settings={"contextual": 3})], now=1.0)
    assert [d.reason for d in out.dead_letters] == ["invalid_settings", "wrong_type"]
    assert not proc.experiments


def test_join_window_expires_by_age_and_budget_and_counts_never_joined():
    w = JoinWindow(60.0, 1 << 20)
    u = np.ones(8)
    for i in range(10):
        w.put(f"r{i}", 0, 0, u, float(i))
    assert w.get("r3") is not None
    w.expire(65.0)        # r0..r4 are older than 60 s; r3 had joined
    assert len(w.entries) == 5 and w.never_joined == {0: 4}
    small = JoinWindow(600.0, 3 * JoinWindow._size("r0", u))
    for i in range(5):
        small.put(f"r{i}", 1, 0, u, 0.0)
    assert list(small.entries) == ["r2", "r3", "r4"] and small.never_joined == {1: 2}


def test_falcon_refits_its_oracle_off_the_decision_path():
    proc = ShardProcessor(0, ProcessorConfig())
    spec = dict(SPEC, algorithm="falcon", first_epoch=4, gamma_scale=1.0, n_aux=10)
    off = _setup(proc, spec=spec)
    proc.apply_prior("c", "a", 0.5)
    proc.apply_prior("c", "b", 0.01)
    deadline = time.monotonic() + 60
    probs = []
    while time.monotonic() < deadline:
        out = proc.process([rec(off, type="decision_request", experiment_id="c", request_id=f"q{off}")], now=1000.0)
        off += 1
        d = orjson.loads(out.decisions[0][1])
        assert d["policy"] == "ctx_falcon" and 0 < d["propensity"] <= 1
        probs.append((d["variant_id"], d["propensity"]))
        if d["variant_id"] == "a" and d["propensity"] > 0.5:
            break  # the refit oracle (prior: a >> b) now favours a
    assert probs[-1][0] == "a" and probs[-1][1] > 0.5


def test_every_dead_letter_is_redacted_where_it_is_made():
    # the sampled `duplicate` dead letter once kept the raw context: redaction lives in DeadLetter now
    from lola.stream.shard import DeadLetter

    raw = orjson.dumps({"type": "decision_request", "user_id": "alice@example.com", "context": {"zip": "90210"}})
    letter = DeadLetter(0, b"e", raw, "duplicate", "")
    assert letter.value == redact(raw) and b"90210" not in letter.value and b"alice" not in letter.value
