"""`lola replay contextual` on tiny CSVs: JSON shape, the specified world, common random numbers."""

from __future__ import annotations

import json

import numpy as np
from test_replay_cli import files, invoke  # noqa: F401 - the fixture

from lola.replay import contextual as C
from lola.replay import protocol as P


def test_contextual_replay_prints_the_specified_report(files):  # noqa: F811
    data, tune, priors, _ = files
    res = invoke("contextual", "--data", data, "--priors", priors, "--tune-data", tune, "--taus", "5,10",
                 "--reps", 2, "--policies", "LLM-LinUCB,FALCON", "--json", "--no-progress")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    bench = doc["benchmark"]
    assert bench["factor_range"] == [0.7, 1.3] and bench["noise_fields"] == 8 and len(bench["segments"]) == 4
    assert bench["segments_hash_to_distinct_features"] is True
    for tau in ("5", "10"):
        entry = doc["per_tau"][tau]
        assert entry["best_context_free"] in ("LOLA", "UCB", "TS")
        assert set(entry["report"]) == {"LOLA", "UCB", "TS", "LLM-LinUCB", "FALCON", "LOLA per segment"}
        for name in ("LLM-LinUCB", "FALCON"):
            row = entry["report"][name]
            assert 0 < row["fraction_of_oracle"] < 2  # realised clicks over the oracle's expected clicks
            ci = row["vs_best_context_free"]["ci95"]
            assert ci[0] <= row["vs_best_context_free"]["diff"] <= ci[1] and row["vs_best_context_free"]["tests"] == 12


def test_world_follows_the_specification_and_clicks_use_common_random_numbers():
    ctr = np.array([[0.02, 0.04, 0.0], [0.9, 0.95, 0.99]])
    batch = P.ReplayBatch(("a", "b"), np.array([2, 3]), ctr, np.full((2, 3), 0.03))
    w = C.make_world(batch, 1)
    ratio = w.ctr_seg[0, :, :2] / ctr[0, None, :2]
    assert ((ratio >= 0.7) & (ratio <= 1.3)).all() and w.ctr_seg.shape == (2, 4, 3)
    assert (w.ctr_seg[0, :, 2] == 0).all() and w.ctr_seg.max() <= 1.0   # padding stays 0; capped at 1
    assert np.allclose(w.oracle, w.ctr_seg.max(axis=2).mean(axis=1))
    params = {"algorithm": "linucb", "alpha": 0.05, "n_aux": 0.0}
    a = C.contextual_clicks(w, params, 20, seed=3, rep=0)
    assert np.array_equal(a, C.contextual_clicks(w, params, 20, seed=3, rep=0))   # seeded
    assert a[1] > a[0] and a[1] <= 60


def test_paired_ci_contains_the_mean_difference():
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 1, 200)
    ci = C.paired_ci(b + 0.1 + rng.normal(0, 0.01, 200), b)
    assert ci["ci95"][0] < 0.1 < ci["ci95"][1] and ci["pct"] > 0


def test_model_arm_features_are_the_workers_rows_of_the_reduced_text(files):  # noqa: F811
    """--arm-features model: each arm's row is lola.stream.features.model_features of the reduced
    text the LinUCB replay uses (TF-IDF SVD here, with --priors), as the worker's 'model' mode."""
    from lola.replay import run
    from lola.stream.features import model_features

    data, tune, priors, _ = files
    rd = run.load_replay_data(data, priors, None, tune, want_features=True)
    rows = C.model_arm_rows(rd.report)
    b = rd.report
    for i in range(len(b)):
        for k in range(int(b.n_arms[i])):
            np.testing.assert_array_equal(rows[i, k], model_features(b.features[i, k, 2:], C.ARM_DIM))
        assert (rows[i, int(b.n_arms[i]):] == 0).all()
    res = invoke("contextual", "--data", data, "--priors", priors, "--tune-data", tune, "--taus", "5",
                 "--reps", 1, "--policies", "LLM-LinUCB", "--arm-features", "model", "--json", "--no-progress")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["benchmark"]["arm_features"].startswith("model: [1, first 3 of TF-IDF SVD")
    assert 0 < doc["per_tau"]["5"]["report"]["LLM-LinUCB"]["fraction_of_oracle"] < 2
