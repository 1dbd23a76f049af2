"""The allocation function (kernels/allocation.py, core.allocation_row) against SciPy and the twin.

The stated bound: every TS probability within TS_ALLOCATION_ERROR (1e-6) of SciPy's
adaptive quad over betainc (tolerance 1e-13), for Beta parameters a, b >= 1 from 1 to
1e12 pseudo-counts and K up to 16; the tests below also hold it for a, b in [0.5, 1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from kernels_twin import Twin, ts_allocation_reference

from lola.kernels import BanditState, ExperimentParams, POLICIES, select, update
from lola.kernels import allocation as al
from lola.kernels import core

BOUND = al.TS_ALLOCATION_ERROR


def kernel(a, b, point=None, active=None):
    K = len(a)
    out = np.zeros(K)
    point = np.zeros(K) if point is None else np.asarray(point, float)
    active = np.ones(K, bool) if active is None else np.asarray(active, bool)
    al.ts_allocation(K, np.asarray(a, float), np.asarray(b, float), point, active, al.GL_T, al.GL_W, al.GL_S, out)
    return out


def reference(a, b, point=None, active=None):
    K = len(a)
    return np.array(ts_allocation_reference(list(map(float, a)), list(map(float, b)),
                                            [0.0] * K if point is None else list(point),
                                            [True] * K if active is None else list(active)))


def random_case(rng):
    K = int(rng.integers(1, 17))
    scale = 10 ** rng.uniform(0, 12)
    ctr = rng.uniform(0.001, 0.5, K)
    n = scale * rng.uniform(0.5, 1.5, K)
    return rng.uniform(1.0, 2.0) + ctr * n, rng.uniform(1.0, 2.0) + (1 - ctr) * n


def test_seeded_random_posteriors_within_the_stated_bound():
    rng = np.random.default_rng(2026)
    worst = 0.0
    for _ in range(40):
        a, b = random_case(rng)
        got, ref = kernel(a, b), reference(a, b)
        worst = max(worst, float(np.abs(got - ref).max()))
        assert got.sum() == pytest.approx(1.0, abs=1e-12)
    assert worst <= BOUND, worst


def test_paper_prior_with_small_counts_within_the_stated_bound():
    # TS with the paper's Beta(1.38, 96.11) prior and 0-60 impressions: non-integer a near 1
    rng = np.random.default_rng(17)
    for _ in range(30):
        K = int(rng.integers(2, 9))
        n = rng.integers(0, 60, K).astype(float)
        c = np.floor(n * rng.uniform(0, 0.2, K))
        a, b = 1.38 + c, 96.11 + n - c
        np.testing.assert_allclose(kernel(a, b), reference(a, b), atol=BOUND, rtol=0)


@pytest.mark.parametrize("a,b", [
    ([1.0], [1.0]),                                       # K = 1
    ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]),                   # zero-count arms: exact tie
    ([5.0, 5.0], [95.0, 95.0]),                           # identical posteriors
    ([1.0, 2.0], [1.0, 1.0]),
    ([1.0 + 1e9, 1.0], [1.0, 1.0 + 1e9]),                 # huge counts, far apart
    ([1e12 + 1, 1e12], [1e12, 1e12 + 1]),                 # huge counts, 1e-6 apart in sd units
    ([0.5, 1.5], [0.7, 4.7]),                             # prior below one pseudo-count
    ([1.38 + 20, 1.38 + 25, 1.38], [96.11 + 980, 96.11 + 975, 96.11]),
])
def test_edge_posteriors(a, b):
    got, ref = kernel(a, b), reference(a, b)
    np.testing.assert_allclose(got, ref, atol=BOUND, rtol=0)
    if len(set(zip(a, b))) == 1:
        np.testing.assert_allclose(got, np.full(len(a), 1 / len(a)), atol=1e-12)


def test_point_masses_and_inactive_arms():
    # n_aux = inf: arms 0 and 1 are point masses at 0.03 (tied), arm 2 continuous, arm 3 retired
    a, b = [-1.0, -1.0, 3.0, 2.0], [0.0, 0.0, 97.0, 50.0]
    point, active = [0.03, 0.03, 0.0, 0.5], [True, True, True, False]
    got, ref = kernel(a, b, point, active), reference(a, b, point, active)
    np.testing.assert_allclose(got, ref, atol=BOUND, rtol=0)
    assert got[0] == got[1] and got[3] == 0.0
    only_points = kernel([-1.0, -1.0], [0.0, 0.0], [0.01, 0.02])
    assert only_points.tolist() == [0.0, 1.0]


def test_never_nan_at_the_parameter_bounds():
    for a, b in (([1e-12, 1e12], [1e12, 1e-12]), ([1e-300, 1.0], [1e-300, 1.0]), ([1e12 + 1e12, 1.0], [1e-12, 1.0])):
        got = kernel(a, b)
        assert np.all(np.isfinite(got)) and got.sum() == pytest.approx(1.0)


def build(policy, priors, **kw):
    p = ExperimentParams(policy=policy, horizon=40 if policy == "ec" else None, **kw)
    state, twin = BanditState(2, 2, feature_dim=3 if "linucb" in policy else 0), Twin(3 if "linucb" in policy else 0)
    r = state.add_experiment(p)
    twin.add_experiment(p)
    for k, prior in enumerate(priors):
        x = np.array([1.0, 0.3 * k, -0.2 * k]) if "linucb" in policy else None
        state.add_arm(r, prior, x)
        twin.add_arm(r, prior, x)
    return state, twin, r


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_matches_the_twin_and_select(policy):
    rng = np.random.default_rng(POLICIES.index(policy))
    state, twin, r = build(policy, [0.02, None, 0.05, 0.03], min_traffic=0.04, burn_in=3)
    rows = np.zeros(6, np.int64)
    for step in range(8):
        alloc = state.allocation(r)
        np.testing.assert_allclose(alloc, twin.allocation(r), atol=BOUND, rtol=1e-12)
        assert alloc.sum() == pytest.approx(1.0, abs=1e-9) and np.all(alloc >= 0.04 - 1e-12)
        slots, prop = select(state, rows, step)
        np.testing.assert_array_equal(prop, alloc[slots])  # a propensity is the allocation at the chosen arm
        c = (rng.random(6) < 0.3).astype(float)
        update(state, rows, slots, np.ones(6), c, np.zeros(6))
        twin.update(rows, slots, np.ones(6), c, np.zeros(6))


def test_ts_allocation_is_computed_once_per_reference():
    # ts_refresh 0.05: the reference posterior (and its cached allocation, the propensity) stands
    # until an arm's Beta (a, b) moved by more than 5 % of a + b
    state, _, r = build("ts", [0.02, 0.03], ts_refresh=0.05)
    update(state, np.zeros(2, np.int64), np.arange(2), np.array([100.0, 100.0]), np.array([3.0, 4.0]), np.zeros(2))
    select(state, np.zeros(4, np.int64), 1)
    assert state.exp_f[r, core.F_TS_REF] == core.REF_ALLOCATION
    state.ucb[r, core.U_TS_P, 0] = 0.123  # a poisoned cache entry is served while the reference stands...
    slots, prop = select(state, np.zeros(64, np.int64), 2)
    assert (slots == 0).any() and set(prop[slots == 0].tolist()) == {0.123}
    one = np.ones(1)
    update(state, np.zeros(1, np.int64), np.zeros(1, np.int64), 5 * one, np.zeros(1), np.zeros(1))  # 5 / 102 < 5 %
    slots, prop = select(state, np.zeros(64, np.int64), 3)
    assert set(prop[slots == 0].tolist()) == {0.123}  # ...also after a move within the threshold...
    update(state, np.zeros(1, np.int64), np.zeros(1, np.int64), one, np.zeros(1), np.zeros(1))  # 6 / 102 > 5 %
    slots, prop = select(state, np.zeros(64, np.int64), 4)
    assert 0.123 not in prop and np.all(prop == state.allocation(r)[slots])  # ...and recomputed past it
    np.testing.assert_array_equal(state.ucb[r, core.U_TS_A, :2], [1.0 + 3.0, 1.0 + 4.0])  # the new reference
    np.testing.assert_array_equal(state.ucb[r, core.U_TS_B, :2], [1.0 + 106.0 - 3.0, 1.0 + 100.0 - 4.0])


def test_ts_refresh_zero_recomputes_at_every_state_version():
    state, _, r = build("ts", [0.02, 0.03], ts_refresh=0.0)
    select(state, np.zeros(4, np.int64), 1)
    state.ucb[r, core.U_TS_P, 0] = 0.123
    update(state, np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1), np.zeros(1), np.zeros(1))
    slots, prop = select(state, np.zeros(64, np.int64), 2)
    assert 0.123 not in prop and np.all(prop == state.allocation(r)[slots])


def test_ts_decisions_follow_the_allocation():
    # seeded, deterministic: 20000 decisions from one state, frequencies vs the quadrature
    state, _, r = build("ts", [None, None, None])
    update(state, np.zeros(3, np.int64), np.arange(3), np.array([200.0, 200.0, 200.0]), np.array([10.0, 12.0, 8.0]),
           np.zeros(3))
    alloc = state.allocation(r)
    slots, prop = select(state, np.zeros(20000, np.int64), 99)
    freq = np.bincount(slots, minlength=3) / 20000
    np.testing.assert_allclose(freq, alloc, atol=4 * math.sqrt(0.25 / 20000))
    np.testing.assert_array_equal(prop, alloc[slots])
