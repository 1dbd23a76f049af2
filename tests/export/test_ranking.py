"""Ranking readouts (ListNet, RankNet, mixes), calibration and the paired bootstrap, on tiny data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lola.data.upworthy import HeadlineTest
from lola.errors import ConfigError
from lola.export.metrics import paired_bootstrap
from lola.export.ranking import build_groups, calibration_scale, fit_linear, listnet_loss, mse_loss, ranknet_loss


def synthetic_tests(n_tests=60, k=4, d=6, seed=0, impressions=200_000):
    """Tests whose true CTRs rise with x @ w_true; features x per headline."""
    w_true = np.random.default_rng(100).normal(size=d)  # one truth; seed draws the headlines
    rng = np.random.default_rng(seed)
    x, tests = [], []
    for t in range(n_tests):
        feats = rng.normal(size=(k, d))
        ctr = 0.02 + 0.002 * (feats @ w_true)
        imps = np.full(k, impressions)
        clicks = rng.binomial(imps, np.clip(ctr, 1e-4, 1))
        names = tuple(f"t{t}h{i}" for i in range(k))
        tests.append(HeadlineTest(f"t{t}", "e", names, imps, clicks))
        x.append(feats)
    x = np.concatenate(x)
    rows = {f"t{t}h{i}": t * k + i for t in range(n_tests) for i in range(k)}
    return tests, x, rows, w_true


def numeric_grad(f, s, eps=1e-6):
    g = np.zeros_like(s)
    for i in range(len(s)):
        e = np.zeros_like(s)
        e[i] = eps
        g[i] = (f(s + e)[0] - f(s - e)[0]) / (2 * eps)
    return g


def test_loss_gradients_match_finite_differences():
    tests, x, rows, _ = synthetic_tests(n_tests=8, k=3)
    groups = build_groups(tests, rows)
    s = np.random.default_rng(1).normal(size=len(x))
    y, w = np.random.default_rng(2).normal(size=len(x)), np.random.default_rng(3).random(len(x)) + 0.5
    for f in (lambda v: listnet_loss(v, groups, 0.002, 0.7), lambda v: ranknet_loss(v, groups),
              lambda v: mse_loss(v, y, w)):
        np.testing.assert_allclose(f(s)[1], numeric_grad(f, s), rtol=1e-5, atol=1e-8)


def test_listnet_by_hand_on_one_test():
    test = HeadlineTest("t", "e", ("a", "b"), np.array([1000, 1000]), np.array([10, 30]))
    groups = build_groups([test], {"a": 0, "b": 1})
    s = np.array([0.0, np.log(3.0)])  # predicted softmax (1/4, 3/4)
    p = np.exp(np.array([0.01, 0.03]) / 0.01)
    p /= p.sum()
    loss, _ = listnet_loss(s, groups, target_std=0.01)
    assert loss == pytest.approx(-(p[0] * np.log(0.25) + p[1] * np.log(0.75)))


def test_groups_keep_rows_with_features_and_orient_pairs():
    tests = [HeadlineTest("t1", "e", ("a", "b", "c"), np.array([5000] * 3), np.array([50, 150, 52])),
             HeadlineTest("t2", "e", ("d", "e"), np.array([5000] * 2), np.array([50, 150]))]
    groups = build_groups(tests, {"a": 0, "b": 1, "c": 2, "d": 3})  # "e" has no row: t2 is dropped
    assert len(groups) == 1 and groups.index.tolist() == [[0, 1, 2]]
    assert sorted(map(tuple, groups.pairs.tolist())) == [(1, 0), (1, 2)]  # winner first; (a, c) not significant


@pytest.mark.parametrize("objective, mix", [("listnet", 0.0), ("ranknet", 0.0), ("listnet", 0.5), ("mse", 0.0)])
def test_each_objective_recovers_the_ranking_direction(objective, mix):
    tests, x, rows, w_true = synthetic_tests()
    groups = build_groups(tests, rows)
    ctr = np.concatenate([t.ctrs for t in tests])
    y = (ctr - ctr.mean()) / ctr.std()
    fit = fit_linear(x, objective, groups, y, np.ones(len(x)), mix=mix, l2=1e-4, target_std=0.002)
    assert fit.converged
    cosine = fit.coef @ w_true / np.linalg.norm(fit.coef) / np.linalg.norm(w_true)
    assert cosine > 0.95
    held_out, xh, _, _ = synthetic_tests(seed=7)
    xh = xh.reshape(len(held_out), -1, x.shape[1])
    hits = [np.argmax(f @ fit.coef) == np.argmax(t.ctrs) for t, f in zip(held_out, xh)]
    assert np.mean(hits) > 0.8


def test_fit_rejects_bad_settings():
    tests, x, rows, _ = synthetic_tests(n_tests=3)
    groups = build_groups(tests, rows)
    with pytest.raises(ConfigError, match="objective"):
        fit_linear(x, "lambdamart", groups)
    with pytest.raises(ConfigError, match="mix"):
        fit_linear(x, "listnet", groups, mix=1.5)
    with pytest.raises(ConfigError, match="MSE term"):
        fit_linear(x, "mse", groups)


def test_calibration_recovers_a_known_scale():
    tests, x, rows, w_true = synthetic_tests(impressions=10**9)  # nearly noise-free CTRs
    groups = build_groups(tests, rows)
    truth = 0.002 * (x @ w_true)
    assert calibration_scale(2.0 * truth, groups, "slope") == pytest.approx(0.5, rel=0.02)
    assert calibration_scale(2.0 * truth, groups, "spread") == pytest.approx(0.5, rel=0.02)
    assert calibration_scale(truth, groups, "none") == 1.0
    # with noisy CTRs the spread rule removes the binomial variance, the raw spread would not
    noisy, xn, rows_n, wn = synthetic_tests(impressions=20_000, seed=3)
    g = build_groups(noisy, rows_n)
    assert calibration_scale(0.002 * (xn @ wn), g, "spread") == pytest.approx(1.0, abs=0.15)


def test_paired_bootstrap_is_exact_on_shifts_and_seeded():
    a = np.linspace(0, 1, 50)
    same = paired_bootstrap(a, a)
    assert (same["diff"], same["lo"], same["hi"]) == (0.0, 0.0, 0.0)
    shifted = paired_bootstrap(a + 0.1, a)
    assert shifted["diff"] == pytest.approx(0.1) and shifted["lo"] == pytest.approx(0.1)
    rng = np.random.default_rng(0)
    b = rng.random(50)
    first, second = paired_bootstrap(a, b, seed=4), paired_bootstrap(a, b, seed=4)
    assert first == second and first["lo"] < first["diff"] < first["hi"]
    # weights: a weighted mean of per-test ratios (pairwise accuracy), zero-weight tests ignored
    w = np.array([2.0, 0.0, 1.0])
    out = paired_bootstrap(np.array([1.0, np.nan, 0.0]), np.array([0.5, np.nan, 0.5]), w)
    assert out["diff"] == pytest.approx((2 * 0.5 + 1 * -0.5) / 3) and out["n_tests"] == 2


# -- on the tiny exported model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_copy(tmp_path_factory, exported_tiny):
    out = tmp_path_factory.mktemp("ranking") / "model"
    shutil.copytree(exported_tiny, out)
    return out


def test_readout_options_are_validated():
    from lola.export.readout import ReadoutOptions

    with pytest.raises(ConfigError, match="no CTR scale"):
        ReadoutOptions("listnet")
    with pytest.raises(ConfigError, match="--objective"):
        ReadoutOptions("pointwise")
    with pytest.raises(ConfigError, match="--mix"):
        ReadoutOptions("ranknet", 2.0, "slope")
    assert ReadoutOptions().is_ridge and ReadoutOptions("mse", 0.0, "slope").is_ridge
    assert not ReadoutOptions("listnet", 0.0, "slope").is_ridge


@pytest.mark.parametrize("objective, mix, calibrate", [("listnet", 0.0, "slope"), ("ranknet", 0.5, "none"),
                                                       ("mse", 0.0, "spread")])
def test_ranking_readout_is_fitted_served_and_recorded(tiny_copy, tiny_csv, tmp_path, objective, mix, calibrate):
    from lola.export.readout import L2_GRID, ReadoutOptions, fit_readout
    from lola.export.serve import OnnxPriorModel

    cache = tmp_path / "emb.npz"
    entry = fit_readout(tiny_copy, tiny_csv, options=ReadoutOptions(objective, mix, calibrate), cache=cache)
    assert entry["calibrate"] == calibrate and entry["gamma"] > 0
    if objective == "mse":  # the ridge, penalty on tune MSE, then its gaps rescaled
        assert entry["kind"] == "ridge_on_embedding" and entry["alpha"] is not None
    else:
        assert entry["kind"] == f"{objective}_on_embedding"
        assert entry["l2"] in L2_GRID and len(entry["grid"]) == len(L2_GRID)
    assert set(entry["tune_ranking"]) == {"top1_accuracy", "pairwise_accuracy_significant"}
    assert (tmp_path / "emb.fp32.npz").is_file()
    card = json.loads((tiny_copy / "model_card.json").read_text())
    assert card["readout"] == entry
    model = OnnxPriorModel(tiny_copy)
    readout = json.loads((tiny_copy / "readout.json").read_text())
    texts = ["dog dog", "cats and money"]
    by_hand = np.clip(model.embed(texts).astype(np.float64) @ np.array(readout["weights"]) + readout["bias"], 0, 1)
    np.testing.assert_allclose(model.predict(texts), by_hand, atol=1e-9)


def test_embedding_cache_serves_repeats_without_the_network(tiny_copy, tmp_path, monkeypatch):
    from lola.export.embcache import cached_outputs
    from lola.export.serve import OnnxPriorModel

    prior = OnnxPriorModel(tiny_copy, readout=False)
    texts = ["dog dog", "cats", "dog dog"]
    z, emb = cached_outputs(prior, texts, None, tmp_path / "c.npz")
    z0, emb0 = prior.network_outputs(texts)
    np.testing.assert_allclose(emb, emb0, atol=1e-6)
    np.testing.assert_allclose(z, z0, atol=1e-6)

    def refuse(*args, **kwargs):
        raise AssertionError("the network ran although every text was cached")

    monkeypatch.setattr(prior, "network_outputs", refuse)
    z1, emb1 = cached_outputs(prior, ["cats", "dog dog"], None, tmp_path / "c.npz")
    np.testing.assert_array_equal(emb1, emb[[1, 0]])
    # a cache written by another network is rebuilt, never read
    data = dict(np.load(tmp_path / "c.fp32.npz"))
    np.savez(tmp_path / "c.fp32.npz", **{**data, "key": np.array("another model")})
    with pytest.raises(AssertionError, match="network ran"):
        cached_outputs(prior, ["cats"], None, tmp_path / "c.npz")


def test_eval_reports_paired_differences_against_a_baseline(tiny_copy, exported_tiny, tiny_csv):
    from lola.export.evaluate import evaluate, format_table

    same = evaluate(exported_tiny, tiny_csv, embedding_baseline=False, baseline=exported_tiny)
    for name, d in same["paired_vs_baseline"]["finetuned_minus_baseline"].items():
        if name != "bootstrap" and np.isfinite(d["diff"]):
            assert (d["diff"], d["lo"], d["hi"]) == (0.0, 0.0, 0.0)
    other = evaluate(tiny_copy, tiny_csv, embedding_baseline=False, baseline=exported_tiny)
    top1 = other["paired_vs_baseline"]["finetuned_minus_baseline"]["top1_accuracy"]
    assert top1["diff"] == pytest.approx(other["predictors"]["finetuned"]["top1_accuracy"]
                                         - same["predictors"]["finetuned"]["top1_accuracy"])
    assert top1["lo"] <= top1["diff"] <= top1["hi"]
    assert "paired over tests" in format_table(other)


def test_readout_study_pairs_every_option_with_the_default(tiny_copy, tiny_csv, tmp_path):
    from lola.export.readout import fit_readout
    from lola.export.study import RANKING_OPTIONS, format_study, run_study

    fit_readout(tiny_copy, tiny_csv)  # the default ridge is what every option is paired against
    report = run_study(tiny_copy, tiny_csv, tmp_path / "emb.npz", n_boot=50)
    names = set(report["options"])
    assert {n for n, _ in RANKING_OPTIONS} <= names and "default + TF-IDF stack" in names
    default = report["options"]["default (served ridge)"]
    for split in ("tune", "test"):
        assert default[split]["top1_accuracy"]["diff"] == 0.0
        # calibration rescales the gaps: the ranking, hence top-1, is the default's
        assert report["options"]["ridge+slope"][split]["top1_accuracy"]["diff"] == 0.0
    assert report["options"][report["chosen_on_tune"]]["servable"]
    assert not report["options"]["default + TF-IDF stack"]["servable"]
    assert "chosen on tune" in format_study(report)


# -- the LoRA stage with a ranking loss -------------------------------------------------------------


@pytest.mark.parametrize("loss, mix", [("listnet", 0.0), ("ranknet", 0.5)])
def test_lora_trains_on_whole_tests_with_a_ranking_loss(tmp_path, tiny_base, loss, mix):
    import csv

    from lola.export.config import make_config
    from lola.export.train import group_batch, prepare_data, train

    path = tmp_path / "packages.csv"
    rng = np.random.default_rng(1)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["clickability_test_id", "eyecatcher_id", "headline", "impressions", "clicks", "test_week"])
        for t in range(40):
            for h in range(3):
                imps = 20_000
                w.writerow([f"t{t:03d}", "e", f"{'dog' if h == 0 else 'cat'} story {t} {h}", imps,
                            int(rng.binomial(imps, 0.03 if h == 0 else 0.01)), 201401 + t % 3])
    config = make_config("quick", max_steps=3, min_impressions=0, train_limit=30, lora_last_layers=None,
                         learning_rate=1e-2, target="level_deviation", loss=loss, loss_mix=mix, batch_size=6)
    data = prepare_data(path, config)
    # the subset limit keeps whole tests: every kept headline is in a kept test of >= 2 headlines
    assert len(data.train) <= 30 and data.groups.mask.sum() == len(data.train)
    assert len(data.groups.pairs) > 0
    picked = group_batch(0, data.groups, config)
    assert len(picked) == 2  # 6 headlines per batch / 3 per test
    state = train(path, tmp_path / "run", config, base=str(tiny_base), progress=False)
    assert state["steps_done"] == 3 and np.isfinite(state["final_loss_mean_last_20"])
    assert state["config"]["loss"] == loss


def test_ranking_loss_needs_the_deviation_target():
    from lola.export.config import make_config

    with pytest.raises(ConfigError, match="needs target=level_deviation"):
        make_config("quick", loss="listnet", target="ctr")
    with pytest.raises(ConfigError, match="loss_mix"):
        make_config("quick", loss="listnet", loss_mix=2.0)
