"""LLM-LinUCB arm features from the prior model (issue 20) in the pure processor and the prior
service: set when the prior arrives, A and b consistent with the row each update used, carried
by checkpoints and by the fault-isolation journal."""

from __future__ import annotations

import time

import numpy as np
import orjson

from lola.stream.features import model_features, text_features
from lola.stream.priors import PriorService
from lola.stream.processor import ShardProcessor
from lola.stream.shard import PriorRequest, ProcessorConfig

D = 6
TEXTS = {"a": "Ten things you never knew", "b": "Why the city is sinking"}
Z_A = np.array([0.3, -0.7, 0.1, 0.9])  # k = 4 < D - 1: the last slot stays 0


def rec(offset, **event):
    return offset, event["experiment_id"].encode(), orjson.dumps(event)


def _variants(exp: str, settings: dict) -> list:
    return [rec(i, type="variant", experiment_id=exp, variant_id=v, text=t, **({"settings": settings} if i == 0 else {}))
            for i, (v, t) in enumerate(TEXTS.items())]


def _counts(start: int, exp: str, vid: str, n: int, c: int, tag: str) -> list:
    out = [rec(start + j, type="impression", experiment_id=exp, variant_id=vid, event_id=f"{tag}i{j}", ts=1000.0 + j)
           for j in range(n)]
    return out + [rec(start + n + j, type="click", experiment_id=exp, variant_id=vid, event_id=f"{tag}c{j}",
                      ts=1000.0 + j) for j in range(c)]


def test_llm_linucb_arm_takes_the_model_row_when_its_prior_arrives_and_keeps_earlier_updates():
    proc = ShardProcessor(0, ProcessorConfig(feature_dim=D))
    recs = _variants("x", {"policy": "llm_linucb", "ridge": 2.0})
    recs += _counts(len(recs), "x", "a", 30, 3, "p")  # before the model's features: the hashed row
    assert proc.process(recs, now=2000.0).dead_letters == []
    row = proc.experiments["x"].row
    hashed, model = text_features(TEXTS["a"], D), model_features(Z_A, D)
    np.testing.assert_array_equal(proc.state.features[row, 0], hashed)

    assert proc.apply_prior("x", "a", 0.02, Z_A)
    assert proc.apply_prior("x", "b", 0.03)  # a prior without features (no projection): hashed row stays
    np.testing.assert_array_equal(proc.state.features[row, 0], model)
    np.testing.assert_array_equal(proc.state.features[row, 1], text_features(TEXTS["b"], D))
    more = _counts(len(recs), "x", "a", 20, 4, "q")  # after: the model's row
    assert proc.process(more, now=2000.0).dead_letters == []

    # A = ridge I + sum of x x^T over impressions, each with the row it was applied with; b likewise
    A = 2.0 * np.eye(D) + 30 * np.outer(hashed, hashed) + 20 * np.outer(model, model)
    np.testing.assert_allclose(proc.state.ainv[row], np.linalg.inv(A), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(proc.state.bvec[row], 3 * hashed + 4 * model, rtol=1e-12)
    for slot in (0, 1):  # the cache z = A^-1 x follows the current rows
        np.testing.assert_allclose(proc.state.z[row, slot], proc.state.ainv[row] @ proc.state.features[row, slot],
                                   rtol=1e-9, atol=1e-12)

    back = ShardProcessor.from_checkpoint(proc.to_checkpoint("events"), ProcessorConfig(feature_dim=D))
    np.testing.assert_array_equal(back.state.features, proc.state.features)
    np.testing.assert_array_equal(back.state.ainv, proc.state.ainv)
    assert back.missing_priors() == []  # both arms had their prior: nothing asked again

    proc._rollback()  # the fault-isolation journal re-applies the prior with its features
    np.testing.assert_array_equal(proc.state.features[row, 0], model)
    np.testing.assert_allclose(proc.state.ainv[row], np.linalg.inv(A), rtol=1e-9, atol=1e-12)


def test_plain_linucb_keeps_hashed_text_features():
    proc = ShardProcessor(0, ProcessorConfig(feature_dim=D))
    assert proc.process(_variants("y", {"policy": "linucb"})).dead_letters == []
    assert proc.apply_prior("y", "a", 0.02, Z_A)
    np.testing.assert_array_equal(proc.state.features[proc.experiments["y"].row, 0], text_features(TEXTS["a"], D))


def _ctx_spec(mode: str) -> dict:
    return {"contextual": {"algorithm": "linucb", "n_aux": 50.0, "arm_features": mode,
                           "features": {"categorical": ["segment"]}}}


def test_contextual_model_mode_sets_the_arm_row_before_the_prior_pseudo_impressions():
    proc = ShardProcessor(0, ProcessorConfig())
    ad = proc.config.context_arm_dim
    assert proc.process(_variants("c", _ctx_spec("model")), now=1000.0).dead_letters == []
    ctx = proc.ctx
    row = ctx.experiments["c"].row
    np.testing.assert_array_equal(ctx.state.arm_x[row, 0], text_features(TEXTS["a"], ad))  # until the model's
    assert proc.apply_prior("c", "a", 0.04, Z_A)
    a = model_features(Z_A, ad)
    np.testing.assert_array_equal(ctx.state.arm_x[row, 0], a)
    e0 = np.zeros(proc.config.context_user_dim)
    e0[0] = 1.0
    np.testing.assert_allclose(ctx.state.bvec[row], 50.0 * 0.04 * np.kron(a, e0), rtol=1e-12)  # prior at [1, z]
    back = ShardProcessor.from_checkpoint(proc.to_checkpoint("events"), ProcessorConfig())
    np.testing.assert_array_equal(back.ctx.state.arm_x[row, :2], ctx.state.arm_x[row, :2])

    slot_proc = ShardProcessor(0, ProcessorConfig())  # other modes ignore the model's features
    assert slot_proc.process(_variants("s", _ctx_spec("slot")), now=1000.0).dead_letters == []
    before = slot_proc.ctx.state.arm_x.copy()
    assert slot_proc.apply_prior("s", "a", 0.04, Z_A)
    np.testing.assert_array_equal(slot_proc.ctx.state.arm_x, before)


class FeatureProvider:
    def __init__(self, feats):
        self.feats = feats

    def predict(self, texts):  # never called: predict_with_features is preferred
        raise AssertionError("predict_with_features expected")

    def predict_with_features(self, texts):
        f = self.feats if self.feats is not None else np.arange(3 * len(texts), dtype=float).reshape(len(texts), 3)
        return np.full(len(texts), 0.05), f


def _drain(service: PriorService, n: int, timeout: float = 5.0) -> list:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += service.results()
        time.sleep(0.01)
    return got


def test_prior_service_returns_the_features_with_the_ctr_and_drops_unusable_ones():
    svc = PriorService(FeatureProvider(None), timeout_s=5).start()
    try:
        for i in range(2):
            svc.submit(PriorRequest(0, "e", f"v{i}", f"text {i}"))
        got = sorted(_drain(svc, 2), key=lambda r: r.variant_id)
    finally:
        svc.stop()
    assert [r.prior for r in got] == [0.05, 0.05]
    assert {tuple(r.features) for r in got} <= {(0.0, 1.0, 2.0), (3.0, 4.0, 5.0)} and len(got) == 2

    svc = PriorService(FeatureProvider(np.array([[np.nan, 1.0]])), timeout_s=5).start()
    try:
        svc.submit(PriorRequest(0, "e", "v", "text"))
        got = _drain(svc, 1)
    finally:
        svc.stop()
    assert [(r.prior, r.features) for r in got] == [(0.05, None)]  # the prior still applies
