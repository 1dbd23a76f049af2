"""Edge allocations (lola.kernels.edge) against a slow NumPy twin, and the paired replay loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lola.errors import KernelInputError
from lola.kernels import BanditState, ExperimentParams, update
from lola.kernels.edge import EDGE_STEPS, edge_allocation, simulate_edge_clicks


def twin_hallucinate(imp, clk, mu, alpha, n_aux, t, horizon, max_steps=EDGE_STEPS):
    """LLM-2UCBs (all arms with a prior, no floor, no burn-in, gamma 1) with hallucinated updates, in NumPy."""
    imp = np.array(imp, float)
    clk = np.array(clk, float)
    mu = np.array(mu, float)
    means = (clk + mu * n_aux) / (1.0 + imp + n_aux)
    w_step = horizon / max(1, min(max_steps, math.ceil(horizon)))
    out = np.zeros(len(imp))
    done = 0.0
    while done < horizon:
        n = 1.0 + imp
        a = alpha * math.sqrt(math.log(t))
        u1 = clk / n + a / np.sqrt(n)
        u2 = (clk + mu * n_aux) / (n + n_aux) + a / np.sqrt(n + n_aux)
        s = np.minimum(u1, u2)
        p = (s == s.max()) / np.sum(s == s.max())
        w = min(w_step, horizon - done)
        out += p * w
        imp += p * w
        clk += p * w * means
        t += w
        done += w
    return out / horizon


def lola_state(mus, alpha=0.08, n_aux=5600.0, rows=1, **kw):
    s = BanditState(capacity_experiments=rows, capacity_arms=len(mus))
    for _ in range(rows):
        r = s.add_experiment(ExperimentParams(policy="llm2ucb", alpha=alpha, n_aux=n_aux, **kw))
        for m in mus:
            s.add_arm(r, prior_ctr=m)
    return s


@pytest.mark.parametrize("horizon", [1, 7, 100, 1000, 25_000])
def test_hallucinate_matches_numpy_twin(horizon):
    mus = [0.012, 0.015, 0.0148, 0.009]
    s = lola_state(mus, alpha=0.5, n_aux=200.0)
    rng = np.random.default_rng(3)
    imp = rng.integers(50, 400, size=4).astype(float)
    clk = np.floor(imp * np.array(mus) * rng.uniform(0.5, 1.5, size=4))
    update(s, np.zeros(4, np.int64), np.arange(4), imp, clk, np.zeros(4))
    got = edge_allocation(s, 0, horizon)
    want = twin_hallucinate(imp, clk, mus, 0.5, 200.0, 1.0 + imp.sum(), horizon)
    np.testing.assert_allclose(got, want, atol=1e-9)
    assert got.sum() == pytest.approx(1.0)


def test_horizon_one_is_the_per_decision_allocation_and_state_is_untouched():
    s = lola_state([0.01, 0.02, 0.015], min_traffic=0.05)
    update(s, np.zeros(3, np.int64), np.arange(3), np.array([100.0, 80.0, 90.0]), np.array([1.0, 3.0, 1.0]), np.zeros(3))
    before = s.impressions.copy(), s.clicks.copy(), s.exp_f.copy(), s.ucb.copy()
    np.testing.assert_array_equal(edge_allocation(s, 0, 1), s.allocation(0))
    p = edge_allocation(s, 0, 500)
    for a, b in zip(before, (s.impressions, s.clicks, s.exp_f, s.ucb)):
        np.testing.assert_array_equal(a, b)
    assert np.all(p >= 0.05 - 1e-12)  # the floor holds over the whole interval
    assert p.sum() == pytest.approx(1.0)


def test_longer_intervals_spread_over_arms_whose_bound_catches_up():
    s = lola_state([0.0150, 0.0149], alpha=0.5, n_aux=50.0)
    update(s, np.zeros(2, np.int64), np.arange(2), np.array([300.0, 300.0]), np.array([5.0, 4.0]), np.zeros(2))
    short, long_ = edge_allocation(s, 0, 2), edge_allocation(s, 0, 5000)
    assert short.max() == 1.0  # one arm for a short interval, as per-decision serving
    assert 0.2 < long_.min() < 0.5  # the trailing arm gets its share of a long one


def test_retired_arms_get_nothing_and_matching_is_a_distribution():
    s = lola_state([0.01, 0.02, 0.015])
    s.retire_arm(0, 1)
    for method in ("hallucinate", "matching"):
        p = edge_allocation(s, 0, 300, method)
        assert p[1] == 0.0 and p.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [dict(horizon=0), dict(horizon=float("nan")), dict(method="greedy"),
                                 dict(max_steps=0), dict(horizon=True)])
def test_bad_inputs_raise_one_error(bad):
    s = lola_state([0.01, 0.02])
    args = {"horizon": 10, "method": "hallucinate", "max_steps": EDGE_STEPS, **bad}
    with pytest.raises(KernelInputError):
        edge_allocation(s, 0, args["horizon"], args["method"], max_steps=args["max_steps"])


def test_simulate_edge_refresh_one_equals_per_decision_and_is_deterministic():
    ctr = np.array([[0.02, 0.03, 0.025]] * 6)
    runs = {}
    for refresh in (0, 1, 50, 50):
        s = lola_state([0.02, 0.025, 0.03], rows=6, alpha=0.3, n_aux=100.0)
        runs.setdefault(refresh, []).append(simulate_edge_clicks(s, np.arange(6), 2000, ctr, 11, refresh))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])  # common random numbers: identical worlds
    np.testing.assert_array_equal(runs[50][0], runs[50][1])
    assert 0 < runs[50][0].sum() < 6 * 2000
