"""lola.kernels: Numba policy kernels over struct-of-arrays bandit state.

The one implementation of every allocation policy; the stream worker and the paper
replay call only this API.

Quick use
---------
>>> import math, numpy as np
>>> from lola.kernels import ExperimentParams, BanditState, select, update, POLICIES
>>> state = BanditState(capacity_experiments=1024, capacity_arms=4)
>>> row = state.add_experiment(ExperimentParams(policy="llm2ucb", alpha=0.08, n_aux=1000.0))
>>> a = state.add_arm(row, prior_ctr=0.012)
>>> b = state.add_arm(row)                       # prior arrives later...
>>> state.set_prior(row, b, 0.015)               # ...from the async LLM
>>> rows = np.array([row, row], dtype=np.int64)
>>> slots, propensity = select(state, rows, 42)  # int64[n], float64[n]
>>> update(state, rows, slots, np.ones(2), np.array([0.0, 1.0]), np.zeros(2))

API
---
``POLICIES``, ``POLICY_TABLE``
    Policy names in kernel-code order, and the one policy table
    (:mod:`lola.kernels.policy_table`, docs/policies.md): code, family, uses prior,
    needs features/horizon, accepted settings with their bounds.
``ExperimentParams(policy, alpha, n_aux, gamma, conversion_weight, horizon,
explore_fraction, min_traffic, burn_in, ts_alpha0, ts_beta0, eb_strength,
linucb_alpha, ridge, bai_epsilon, bai_gamma, bai_delta, bai_radius, propensity_draws,
ts_refresh)``
    Frozen; each broken rule raises ``ConfigError`` with one message; a setting the
    policy does not read (a BAI setting on ``llm2ucb``) is one too.
``BanditState(capacity_experiments=1024, capacity_arms=4, feature_dim=0)``
    ``add_experiment(params) -> row``; ``add_experiments(params, prior_ctr[n, K],
    features=None) -> rows`` (bulk); ``add_arm(row, prior_ctr=None, features=None)
    -> slot``; ``set_prior(row, slot, ctr)``; ``retire_arm(row, slot)``;
    ``warm_start_linear(row, X, r)``; ``good_arms(row)`` / ``bai_done_for(row)``;
    ``allocation(row) -> float64[K]`` (next decision's probability per arm);
    ``experiment_summary(row, seed=0) -> dict``; ``to_bytes()`` /
    ``BanditState.from_bytes(blob)``; ``params(row)``. Arrays ``impressions``,
    ``clicks``, ``conversions``, ``mu_aux``, ``has_prior``, ``active`` ``[E, K]``;
    per-experiment views ``alpha``, ``n_aux``, ``gamma``, ``t``, ``steps``.
``select(state, rows, randomness) -> (slots int64[n], propensity float64[n])``
    Reads the state as of the call start (a batch never sees its own decisions).
    ``randomness``: int seed, uint64[n] keys or float64[n, 2] uniforms.
``update(state, rows, slots, impressions, clicks, conversion_value)``
    float64[n] each; applied in array order; advances ``t``; discounts by gamma per
    impression; reward = clicks + lambda * conversion_value.
``simulate(state, rows, steps, true_ctr, seed, propensities=False)``
    Fused select+update loop for replays and benchmarks, same @njit functions.

Propensities: ``state.allocation(row)[slot]``, the one allocation function (cached per
experiment and state version): ``1/#tied`` for deterministic policies, TS by quadrature of
P(arm's draw is the largest) within ``allocation.TS_ALLOCATION_ERROR`` (1e-6). A
min-traffic floor ``f`` (capped at ``1/K_active``) and burn-in are folded in:
``p = f + (1 - K_active f) p_policy``; during burn-in ``p = 1/K_active``. With gamma < 1
the prior weight ``n_aux`` is discounted with the data.
"""

from lola.kernels.api import select, simulate, update
from lola.kernels.params import POLICIES, ExperimentParams
from lola.kernels.policy_table import TABLE as POLICY_TABLE
from lola.kernels.state import BanditState

__all__ = ["POLICIES", "POLICY_TABLE", "ExperimentParams", "BanditState", "select", "update", "simulate"]
