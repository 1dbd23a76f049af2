"""LinUCB policies in the pure processor: hashed text features, propensities against the
allocation twin, and checkpoints that carry the features exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from lola.kernels import ExperimentParams
from lola.stream.features import text_features
from lola.stream.processor import ShardProcessor
from lola.stream.shard import ProcessorConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "kernels"))  # tests/ has no packages
from kernels_twin import Twin  # noqa: E402

TEXTS = {"a": "Ten things you never knew", "b": "Why the city is sinking", "c": "A short history of bread"}
COUNTS = {"a": (60, 3), "b": (40, 4), "c": (30, 0)}


def rec(offset: int, **event) -> tuple[int, bytes, bytes]:
    return offset, event["experiment_id"].encode(), orjson.dumps(event)


def test_text_features_are_deterministic_normalised_and_signed():
    x = text_features("Hello world, hello!", 8)
    assert x.shape == (8,) and x[0] == 1.0
    assert np.linalg.norm(x[1:]) == pytest.approx(1.0)
    np.testing.assert_array_equal(x, text_features("hello WORLD hello", 8))  # case and punctuation ignored
    assert not np.array_equal(x, text_features("goodbye world", 8))
    np.testing.assert_array_equal(text_features("", 4), [1.0, 0.0, 0.0, 0.0])  # no words: intercept only
    np.testing.assert_array_equal(text_features("anything", 1), [1.0])
    with pytest.raises(ValueError):
        text_features("x", 0)


def _stream(policy: str, settings: dict) -> list:
    out, off = [], 0
    for i, (vid, text) in enumerate(TEXTS.items()):
        ev = {"type": "variant", "experiment_id": policy, "variant_id": vid, "text": text}
        if i == 0:
            ev["settings"] = {"policy": policy, **settings}
        out.append(rec(off, **ev))
        off += 1
    for vid, (n, c) in COUNTS.items():
        for j in range(n):
            out.append(rec(off, type="impression", experiment_id=policy, variant_id=vid, event_id=f"{vid}i{j}",
                           ts=1000.0 + j))
            off += 1
        for j in range(c):
            out.append(rec(off, type="click", experiment_id=policy, variant_id=vid, event_id=f"{vid}c{j}",
                           ts=1000.0 + j))
            off += 1
    return out


def _twin(policy: str, settings: dict, d: int, priors: dict) -> list[float]:
    cfg = ProcessorConfig()
    reads = {"n_aux": cfg.default_n_aux} if policy == "llm_linucb" else {}
    p = ExperimentParams.from_dict({"policy": policy, **reads, **settings})
    twin = Twin(d)
    row = twin.add_experiment(p)
    for vid, text in TEXTS.items():
        slot = twin.add_arm(row, priors.get(vid), text_features(text, d))
        n, c = COUNTS[vid]
        for _ in range(n):
            twin.update_one(row, slot, 1.0, 0.0, 0.0)
        twin.update_one(row, slot, 0.0, float(c), 0.0)
    return twin.allocation(row)


@pytest.mark.parametrize("policy,settings,d", [
    ("linucb", {"linucb_alpha": 0.5}, 8),
    ("linucb", {"ridge": 2.0, "min_traffic": 0.05}, 3),
    ("llm_linucb", {"min_traffic": 0.05}, 8),
])
def test_linucb_policies_are_served_with_the_twins_propensities(policy, settings, d):
    proc = ShardProcessor(0, ProcessorConfig(feature_dim=d))
    records = _stream(policy, settings)
    out = proc.process(records)
    assert out.dead_letters == []
    priors = {"a": 0.05, "c": 0.01} if policy == "llm_linucb" else {}  # b: no prior yet, still servable
    for vid, prior in priors.items():
        assert proc.apply_prior(policy, vid, prior)
    want = _twin(policy, settings, d, priors)
    np.testing.assert_allclose([proc.snapshot(policy)["arms"][v]["serving_share"] for v in TEXTS], want,
                               atol=1e-12)
    off = len(records)
    out = proc.process([rec(off + i, type="decision_request", experiment_id=policy, request_id=f"r{i}")
                        for i in range(20)])
    assert len(out.decisions) == 20 and out.dead_letters == []
    for _, value in out.decisions:
        dec = orjson.loads(value)
        assert dec["policy"] == policy
        assert dec["propensity"] == pytest.approx(want[list(TEXTS).index(dec["variant_id"])], abs=1e-12)
        assert dec["propensity"] > 0

    # A checkpoint carries d and every arm's features bit for bit; the restored shard decides alike.
    back = ShardProcessor.from_checkpoint(proc.to_checkpoint("events"), ProcessorConfig(feature_dim=d + 1))
    assert back.state.feature_dim == d
    np.testing.assert_array_equal(back.state.features, proc.state.features)
    np.testing.assert_array_equal(back.state.ainv, proc.state.ainv)
    row = proc.experiments[policy].row
    for slot, vid in enumerate(TEXTS):
        np.testing.assert_array_equal(back.state.features[row, slot], text_features(TEXTS[vid], d))
    later = [rec(off + 100 + i, type="decision_request", experiment_id=policy, request_id=f"s{i}") for i in range(5)]

    def served(p):
        return [(orjson.loads(v)["variant_id"], orjson.loads(v)["propensity"]) for _, v in p.process(later).decisions]

    assert served(back) == served(proc)


def test_linucb_without_feature_dim_is_a_dead_letter_naming_the_setting():
    proc = ShardProcessor(0)  # the default feature_dim is 0
    out = proc.process([rec(0, type="variant", experiment_id="x", variant_id="a", text="t",
                            settings={"policy": "llm_linucb"})])
    assert [(d.reason, "LOLA_FEATURE_DIM" in d.detail) for d in out.dead_letters] == [("invalid_settings", True)]
    assert proc.state.feature_dim == 0 and proc.experiments == {}


def test_linucb_arms_added_past_capacity_keep_their_features():
    proc = ShardProcessor(0, ProcessorConfig(feature_dim=4))
    events = [rec(i, type="variant", experiment_id="g", variant_id=f"v{i}", text=f"headline number {i} w{i}",
                  **({"settings": {"policy": "linucb"}} if i == 0 else {})) for i in range(9)]  # 4 arms -> grows
    assert proc.process(events).dead_letters == []
    row = proc.experiments["g"].row
    for i in range(9):
        np.testing.assert_array_equal(proc.state.features[row, i], text_features(f"headline number {i} w{i}", 4))
