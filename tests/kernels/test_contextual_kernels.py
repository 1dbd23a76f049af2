"""The contextual kernels (LLM-LinUCB with user context, LLM-FALCON) against their NumPy twin."""

from __future__ import annotations

import numpy as np
import pytest
from contextual_twin import ContextualTwin
from hypothesis import given, settings
from hypothesis import strategies as st

from lola.errors import ConfigError, KernelInputError
from lola.kernels.contextual_state import ContextualParams, ContextualState


def _setup(algorithm, rng, k=4, n_aux=0.0, **kw):
    arms = [np.r_[1.0, rng.normal(size=3)] for _ in range(k)]
    priors = rng.uniform(0.01, 0.1, k)
    state = ContextualState(4, 8, capacity_experiments=1, capacity_arms=2)
    row = state.add_experiment(ContextualParams(algorithm, n_aux=n_aux, **kw))
    for a, mu in zip(arms, priors):
        state.add_arm(row, a, prior_ctr=mu if n_aux > 0 else None)
    twin = ContextualTwin(algorithm, arms, n_aux=n_aux, priors=priors, **kw)
    return state, row, twin


def _users(rng, n):
    return np.column_stack([np.ones(n), rng.normal(size=(n, 7))])


@pytest.mark.parametrize("algorithm", ["linucb", "falcon"])
def test_simulate_matches_twin_decision_by_decision(algorithm):
    rng = np.random.default_rng(7)
    state, row, twin = _setup(algorithm, rng, n_aux=20.0, alpha=0.2, gamma_scale=0.5, first_epoch=8.0)
    n = 300
    users, seg = _users(rng, n), rng.integers(0, 4, n)
    ctr = rng.uniform(0.05, 0.6, (1, 4, 4))
    slots, prop, clicks = state.simulate(np.zeros(n, dtype=np.int64), users, seg, ctr, seed=11)
    want = twin.simulate(users, seg, ctr[0], seed=11)
    assert slots.tolist() == [w[0] for w in want]
    np.testing.assert_allclose(prop, [w[1] for w in want], rtol=1e-9)
    np.testing.assert_array_equal(clicks, [w[2] for w in want])
    if algorithm == "linucb":
        np.testing.assert_allclose(state.theta[row], np.linalg.solve(twin.A, twin.b), rtol=1e-7, atol=1e-10)
    else:
        assert state.par[row, 6] > 3  # several epochs ran (the oracle was refit at each)
        np.testing.assert_allclose(state.wts[row], twin.W, rtol=1e-7, atol=1e-10)


def test_select_then_update_equals_simulate_and_select_reads_only():
    rng = np.random.default_rng(3)
    a, _, _ = _setup("linucb", rng)
    rng = np.random.default_rng(3)
    b, _, _ = _setup("linucb", rng)
    n = 50
    users, seg = _users(rng, n), rng.integers(0, 4, n)
    ctr = rng.uniform(0.1, 0.9, (1, 4, 4))
    slots, prop, clicks = a.simulate(np.zeros(n, dtype=np.int64), users, seg, ctr, seed=5)
    from kernels_twin import decision_keys
    keys = np.array(decision_keys(5, n), dtype=np.uint64)
    for i in range(n):
        before = b.ainv.copy()
        s, p = b.select(np.zeros(1, dtype=np.int64), users[i:i + 1], keys[i:i + 1])
        np.testing.assert_array_equal(b.ainv, before)
        assert (s[0], p[0]) == (slots[i], prop[i])
        b.update(np.zeros(1, dtype=np.int64), s, users[i:i + 1], np.ones(1), clicks[i:i + 1])
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-12)


def test_a_reward_arriving_later_trains_like_one_row():
    rng = np.random.default_rng(4)
    a, row, _ = _setup("linucb", rng)
    rng = np.random.default_rng(4)
    b, _, _ = _setup("linucb", rng)
    u = _users(rng, 1)
    r0 = np.zeros(1, dtype=np.int64)
    a.update(r0, np.array([2]), u, np.ones(1), np.ones(1))
    b.update(r0, np.array([2]), u, np.ones(1), np.zeros(1))
    b.update(r0, np.array([2]), u, np.zeros(1), np.ones(1))  # the click joins later: w = 0
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-12)
    np.testing.assert_allclose(a.ainv, b.ainv, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), gamma_scale=st.floats(0.0, 50.0), n_off=st.integers(0, 2))
def test_falcon_propensities_are_exact_probabilities(seed, gamma_scale, n_off):
    rng = np.random.default_rng(seed)
    state, row, twin = _setup("falcon", rng, n_aux=5.0, gamma_scale=gamma_scale, first_epoch=4.0)
    for k in range(n_off):
        state.retire_arm(row, k)
        twin.active[k] = False
    n = 40
    users, seg = _users(rng, n), rng.integers(0, 4, n)
    slots, prop, _ = state.simulate(np.zeros(n, dtype=np.int64), users, seg, rng.uniform(0, 1, (1, 4, 4)), seed)
    assert (slots >= n_off).all()
    assert ((prop > 0) & (prop <= 1)).all()
    u = _users(rng, 1)[0]
    twin.W, twin.gamma = state.wts[row].copy(), state.par[row, 3]
    p, _ = twin.probabilities(u)
    assert p.sum() == pytest.approx(1.0) and (p[:n_off] == 0).all() and (p[n_off:] > 0).all()


def test_checkpoint_round_trip_and_capacity_growth():
    rng = np.random.default_rng(1)
    st_ = ContextualState(4, 8, capacity_experiments=1, capacity_arms=1)
    for alg in ("linucb", "falcon", "linucb"):
        row = st_.add_experiment(ContextualParams(alg, n_aux=3.0))
        for _ in range(3):
            st_.add_arm(row, np.r_[1.0, rng.normal(size=3)], prior_ctr=0.2)
    users = _users(rng, 30)
    rows = np.arange(30, dtype=np.int64) % 3
    st_.update(rows, np.zeros(30, dtype=np.int64), users, np.ones(30), np.ones(30))
    back = ContextualState.from_bytes(st_.to_bytes())
    assert back.params == st_.params
    for n in ("ainv", "theta", "gram", "arm_x", "par", "active"):
        np.testing.assert_array_equal(getattr(back, n)[:3], getattr(st_, n)[:3])
    s1 = st_.select(rows, users, 9)
    s2 = back.select(rows, users, 9)
    np.testing.assert_array_equal(s1[0], s2[0])


def test_wrapper_rejects_bad_input():
    st_ = ContextualState(4, 8)
    with pytest.raises(ConfigError):
        ContextualParams("ucb")
    with pytest.raises(ConfigError):
        ContextualParams(alpha=float("nan"))
    with pytest.raises(ConfigError):
        ContextualState(16, 8)
    row = st_.add_experiment(ContextualParams())
    with pytest.raises(KernelInputError):
        st_.add_arm(row, np.ones(3))
    st_.add_arm(row, np.ones(4))
    with pytest.raises(KernelInputError):
        st_.select(np.zeros(1, dtype=np.int64), np.full((1, 8), np.nan), 0)
    with pytest.raises(KernelInputError):
        st_.update(np.zeros(1, dtype=np.int64), np.array([3]), np.ones((1, 8)), np.ones(1), np.ones(1))
