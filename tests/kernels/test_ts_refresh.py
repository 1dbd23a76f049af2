"""TS refresh (``ts_refresh``): decisions draw from a reference posterior that is refreshed
when an arm's Beta (a, b) moved by more than the threshold; the propensity is that
reference's cached allocation. Kernel against the twin's literal rule, plus invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from kernels_twin import decision_keys
from test_kernels_twin import build, drive, priors

from lola.errors import ConfigError
from lola.kernels import BanditState, ExperimentParams, core, select, simulate, update
from lola.kernels.allocation import TS_ALLOCATION_ERROR
from lola.kernels.policies import ts_beta_params

THRESHOLDS = (0.0, 0.02, 0.3)


def allocations_match(state, twin):
    """What the next decision of each TS row would use matches the twin's (looking moves nothing)."""
    for r in range(state.n_experiments):
        if state.policy[r] in (core.P_TS, core.P_LLM_TS):
            np.testing.assert_allclose(state.allocation(r), twin.allocation(r), atol=TS_ALLOCATION_ERROR, rtol=0)


def assert_reference_within_threshold(state, rows):
    """Right after a decision, its row's reference is within ts_refresh of the current posterior."""
    for r in np.unique(rows):
        f = state.exp_f[r]
        for k in range(int(state.n_arms[r])):
            if not state.active[r, k]:
                continue
            c = state.clicks[r, k] + f[core.F_LAMBDA] * state.conversions[r, k]
            a, b = ts_beta_params(state.impressions[r, k], c, state.mu_aux[r, k], state.has_prior[r, k],
                                  f[core.F_N_AUX], f[core.F_TS_A0], f[core.F_TS_B0])
            ra, rb = state.ucb[r, core.U_TS_A, k], state.ucb[r, core.U_TS_B, k]
            if ra < 0:
                assert a < 0
            else:
                assert abs(a - ra) + abs(b - rb) <= f[core.F_TS_REFRESH] * (ra + rb)


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("policy", ["ts", "llm_ts"])
def test_seeded_sequences_match_the_twin(policy, threshold):
    rng = np.random.default_rng(int(threshold * 100) + (7 if policy == "ts" else 8))
    specs = [(ExperimentParams(policy=policy, n_aux=n, ts_alpha0=a0, ts_beta0=b0, gamma=g, conversion_weight=lam,
                               min_traffic=mt, ts_refresh=threshold),
              priors(rng, int(rng.integers(1, 5)), missing=0.2))
             for n, a0, b0, g, lam, mt in ((1200.0, 1.38, 96.11, 1.0, 0.0, 0.0), (0.0, 1.0, 1.0, 0.97, 0.5, 0.1),
                                           (math.inf, 0.5, 0.7, 1.0, 0.0, 0.0), (30.0, 1.0, 1.0, 0.99, 0.0, 0.05))]
    state, twin = build(specs)
    drive(state, twin, rng, steps=25, batch=8, with_conversions=True, check=allocations_match)


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_every_decision_draws_from_a_reference_within_the_threshold(threshold):
    rng = np.random.default_rng(31)
    state = BanditState(6, 3)
    for g, n_aux in ((1.0, 0.0), (0.95, 0.0), (1.0, 500.0)):
        for _ in range(2):
            r = state.add_experiment(ExperimentParams(policy="llm_ts" if n_aux else "ts", n_aux=n_aux, gamma=g,
                                                      ts_refresh=threshold))
            for k in range(3):
                state.add_arm(r, float(rng.uniform(0.01, 0.1)) if n_aux else None)
    rows = np.arange(6, dtype=np.int64)
    for step in range(60):
        slots, prop = select(state, rows, step)
        assert_reference_within_threshold(state, rows)
        np.testing.assert_array_equal(prop, [state.allocation(int(r))[s] for r, s in zip(rows, slots)])
        update(state, rows, slots, np.ones(6), (rng.random(6) < 0.2) * 1.0, np.zeros(6))


def test_looking_does_not_move_the_reference():
    # snapshots (allocation) must not change what decisions draw from
    state = BanditState(1, 2)
    r = state.add_experiment(ExperimentParams(policy="ts", ts_refresh=0.05))
    state.add_arm(r)
    state.add_arm(r)
    select(state, np.zeros(1, np.int64), 1)
    ref = state.ucb[r, core.U_TS_A:core.U_TS_B + 1].copy()
    update(state, np.zeros(1, np.int64), np.zeros(1, np.int64), np.array([50.0]), np.array([2.0]), np.zeros(1))
    moved = state.allocation(r)  # the next decision will take a new reference: this is its allocation...
    np.testing.assert_array_equal(state.ucb[r, core.U_TS_A:core.U_TS_B + 1], ref)  # ...not yet taken
    slots, prop = select(state, np.zeros(200, np.int64), 2)
    np.testing.assert_array_equal(prop, moved[slots])


def test_lifecycle_changes_take_a_new_reference():
    rng = np.random.default_rng(21)
    state, twin = build([(ExperimentParams(policy="llm_ts", n_aux=200.0, ts_refresh=0.3), priors(rng, 3))],
                        capacity_arms=3)
    drive(state, twin, rng, steps=10, batch=6)
    assert state.exp_f[0, core.F_TS_REF] == core.REF_ALLOCATION
    state.retire_arm(0, 1)
    twin.exps[0].arms[1].active = False
    twin.changed(0)
    assert state.exp_f[0, core.F_TS_REF] == core.REF_NONE
    drive(state, twin, rng, steps=6, batch=6)
    state.set_prior(0, 2, 0.07)
    twin.exps[0].arms[2].prior = 0.07
    twin.changed(0)
    drive(state, twin, rng, steps=6, batch=6)
    assert state.add_arm(0, 0.03) == twin.add_arm(0, 0.03) == 3
    drive(state, twin, rng, steps=6, batch=6)


def test_zero_is_a_draw_from_the_current_posterior():
    # ts_refresh = 0: the decision is the argmax of one draw from the current posterior,
    # the same draw the snapshot's score shows for the same key
    state = BanditState(1, 3)
    r = state.add_experiment(ExperimentParams(policy="ts", ts_refresh=0.0))
    for _ in range(3):
        state.add_arm(r)
    rng = np.random.default_rng(3)
    out = np.empty(3)
    for step in range(30):
        keys = decision_keys(step, 1)
        slots, _ = select(state, np.zeros(1, np.int64), np.array(keys, dtype=np.uint64))
        core.scores_kernel(r, np.uint64(keys[0]), *state.kernel_args(), out)
        assert slots[0] == int(np.argmax(out))
        update(state, np.zeros(1, np.int64), slots, np.ones(1), (rng.random(1) < 0.3) * 1.0, np.zeros(1))


def test_quadratures_follow_the_threshold():
    # one warm experiment, 400 decisions one at a time: with 0 every decision after an update
    # needs a new allocation; with 0.1 a new one only every ~10 % growth of an arm's counts
    counts = {}
    for threshold in (0.0, 0.1):
        state = BanditState(1, 2)
        r = state.add_experiment(ExperimentParams(policy="ts", ts_refresh=threshold))
        state.add_arm(r)
        state.add_arm(r)
        update(state, np.zeros(2, np.int64), np.arange(2), np.array([500.0, 500.0]), np.array([20.0, 25.0]),
               np.zeros(2))
        rng = np.random.default_rng(5)
        for step in range(400):
            slots, prop = select(state, np.zeros(1, np.int64), step)
            assert prop[0] == state.allocation(r)[slots[0]]
            update(state, np.zeros(1, np.int64), slots, np.ones(1), (rng.random(1) < 0.05) * 1.0, np.zeros(1))
        counts[threshold] = state.ts_quadratures
    assert counts[0.0] == 400
    # 400 impressions on ~502 pseudo-counts per arm: at most ~ln(902/502)/ln(1.1) + 1 refreshes per arm
    assert 1 <= counts[0.1] <= 2 * (math.log(902 / 502) / math.log(1.1) + 1)


def test_simulate_without_propensities_runs_no_quadrature():
    state = BanditState(4, 3)
    state.add_experiments(ExperimentParams(policy="ts"), np.full((4, 3), np.nan))
    ctr = np.full((4, 3), 0.05)
    simulate(state, np.arange(4, dtype=np.int64), 200, ctr, 1)
    assert state.ts_quadratures == 0
    simulate(state, np.arange(4, dtype=np.int64), 200, ctr, 2, propensities=True)
    assert 4 <= state.ts_quadratures < 4 * 200


@pytest.mark.parametrize("bad", [-0.01, 1.5, math.nan, "0.1", True])
def test_threshold_is_validated(bad):
    with pytest.raises(ConfigError, match="ts_refresh"):
        ExperimentParams(policy="ts", ts_refresh=bad)


def test_threshold_is_a_ts_setting_only():
    assert ExperimentParams.from_dict({"policy": "llm_ts", "ts_refresh": 0.1}).ts_refresh == 0.1
    with pytest.raises(ConfigError, match="does not use ts_refresh"):
        ExperimentParams.from_dict({"policy": "llm2ucb", "ts_refresh": 0.1})


def test_set_params_applies_a_new_threshold():
    state = BanditState(1, 2)
    r = state.add_experiment(ExperimentParams(policy="ts", ts_refresh=0.2))
    state.add_arm(r)
    state.add_arm(r)
    select(state, np.zeros(2, np.int64), 1)
    state.set_params(r, ExperimentParams(policy="ts", ts_refresh=0.0))
    assert state.exp_f[r, core.F_TS_REFRESH] == 0.0 and state.exp_f[r, core.F_TS_REF] == core.REF_NONE
