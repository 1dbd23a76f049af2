"""Edge allocations: the probability of each arm for a whole interval of decisions (@njit).

An edge server (``lola.client.EdgeAllocator``) serves one snapshot until the next one
arrives, ``H`` decisions later. The per-decision allocation
(:func:`lola.kernels.core.allocation_row`, the one allocation function) of a
deterministic index policy puts the whole interval on one arm. Two designs for the
interval, both built on that function:

* ``hallucinate`` (batched UCB with hallucinated updates, as in batched GP-UCB): the
  interval is cut into ``min(H, EDGE_STEPS)`` equal steps (a burn-in that ends inside the
  interval gets a step of its own); at each step the allocation of
  a scratch copy of the experiment is taken, and every arm is then credited with its
  share of the step's impressions and with clicks at its current belief mean
  (:func:`belief_mean`: the prior-augmented mean, so the means do not move but the
  confidence widths shrink as they would). The edge allocation is the average of the
  step allocations: the fraction of the interval per-decision serving would give each
  arm if the outcomes matched the current means. ``H = 1`` is exactly ``allocation_row``.
* ``matching`` (probability matching): P(arm is best) under the Beta posterior with the
  experiment's prior weight (:func:`lola.kernels.allocation.ts_row_allocation`), with the
  experiment's floor and burn-in; it does not depend on ``H``.

The hallucinated updates go through the worker's own update rule (``core.engine`` in
``MODE_UPDATE``), so discounting, E&C commits and BAI elimination behave as they would.

:func:`simulate_edge` is the paired replay loop (per-decision against edge serving with
a refresh every ``R`` decisions, common random numbers); ``lola replay edge`` calls it.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from lola.errors import KernelInputError
from lola.kernels import core
from lola.kernels.api import _check_rows
from lola.kernels.allocation import ts_row_allocation
from lola.kernels.numba_config import NJIT
from lola.kernels.rng import GOLDEN, mix64, uniform
from lola.kernels.state import BanditState

#: Hallucinated steps per interval at most (the interval's allocation is their average).
EDGE_STEPS = 32
METHODS = ("hallucinate", "matching")
M_HALLUCINATE = 0
M_MATCHING = 1


@numba.njit(**NJIT)
def belief_mean(n_obs, c, mu, has_prior, n_aux):
    """An arm's current mean reward belief: (c + mu n_aux) / (1 + n + n_aux) with a prior
    (``mu`` for ``n_aux = inf``), c / (1 + n) without (Algorithm 1's m2 and m1)."""
    if has_prior:
        if math.isinf(n_aux):
            return mu
        return (c + mu * n_aux) / (1.0 + n_obs + n_aux)
    return c / (1.0 + n_obs)


@numba.njit(**NJIT)
def copy_row(e, d, policy, exp_f, n_arms, imp, clk, conv, mu, has_prior, active, cand, ucb, feats, z, ainv, bvec,
             bai_done, ec_committed, s_policy, s_exp_f, s_n_arms, s_imp, s_clk, s_conv, s_mu, s_has_prior, s_active,
             s_cand, s_ucb, s_feats, s_z, s_ainv, s_bvec, s_bai_done, s_ec_committed):
    """Row ``e`` of a state into row ``d`` of a scratch state of the same arm and feature capacity."""
    s_policy[d] = policy[e]
    s_exp_f[d, :] = exp_f[e, :]
    s_n_arms[d] = n_arms[e]
    s_imp[d, :] = imp[e, :]
    s_clk[d, :] = clk[e, :]
    s_conv[d, :] = conv[e, :]
    s_mu[d, :] = mu[e, :]
    s_has_prior[d, :] = has_prior[e, :]
    s_active[d, :] = active[e, :]
    s_cand[d, :] = cand[e, :]
    s_ucb[d, :, :] = ucb[e, :, :]
    s_feats[d, :, :] = feats[e, :, :]
    s_z[d, :, :] = z[e, :, :]
    s_ainv[d, :, :] = ainv[e, :, :]
    s_bvec[d, :] = bvec[e, :]
    s_bai_done[d] = bai_done[e]
    s_ec_committed[d] = ec_committed[e]


@numba.njit(**NJIT)
def matching_row(e, exp_f, n_arms, imp, clk, conv, mu, has_prior, active, out):
    """Probability matching with the experiment's prior weight, floor and burn-in folded in."""
    K = n_arms[e]
    row_f = exp_f[e]
    k_act = core.count_active(e, K, active)
    for k in range(K):
        out[k] = 0.0
    if k_act == 0:
        return
    if row_f[core.F_STEPS] < row_f[core.F_BURN_IN]:
        for k in range(K):
            out[k] = 1.0 / k_act if active[e, k] else 0.0
        return
    ts_row_allocation(K, row_f[core.F_N_AUX], 1.0, 1.0, row_f[core.F_LAMBDA], imp[e], clk[e], conv[e], mu[e],
                      has_prior[e], active[e], out)
    floor, mass = core.traffic_floor(row_f[core.F_MIN_TRAFFIC], k_act)
    for k in range(K):
        out[k] = (floor + (1.0 - mass) * out[k]) if active[e, k] else 0.0


@numba.njit(**NJIT)
def hallucinate_row(e, horizon, max_steps, policy, exp_f, n_arms, imp, clk, conv, mu, has_prior, active, cand, ucb,
                    feats, z, ainv, bvec, bai_done, ec_committed, s_policy, s_exp_f, s_n_arms, s_imp, s_clk, s_conv,
                    s_mu, s_has_prior, s_active, s_cand, s_ucb, s_feats, s_z, s_ainv, s_bvec, s_bai_done,
                    s_ec_committed, tab, out):
    """Average allocation over ``horizon`` decisions with hallucinated updates (module docstring).

    Uses row 0 of the scratch state; never writes the source state.
    """
    K = n_arms[e]
    copy_row(e, 0, policy, exp_f, n_arms, imp, clk, conv, mu, has_prior, active, cand, ucb, feats, z, ainv, bvec,
             bai_done, ec_committed, s_policy, s_exp_f, s_n_arms, s_imp, s_clk, s_conv, s_mu, s_has_prior, s_active,
             s_cand, s_ucb, s_feats, s_z, s_ainv, s_bvec, s_bai_done, s_ec_committed)
    n_aux = exp_f[e, core.F_N_AUX]
    lam = exp_f[e, core.F_LAMBDA]
    means = np.empty(K)
    for k in range(K):
        means[k] = belief_mean(imp[e, k], clk[e, k] + lam * conv[e, k], mu[e, k], has_prior[e, k], n_aux)
    w_step = horizon / max(1, min(max_steps, int(math.ceil(horizon))))
    p = np.empty(K)
    rows = np.zeros(K, dtype=np.int64)
    slots = np.arange(K)
    in_w = np.empty(K)
    in_c = np.empty(K)
    in_v = np.zeros(K)
    keys = np.zeros(1, dtype=np.uint64)
    uni = np.zeros((1, 2))
    ctr = np.zeros((1, 1))
    o_slots = np.zeros(1, dtype=np.int64)
    o_prop = np.zeros(1)
    for k in range(K):
        out[k] = 0.0
    done = 0.0
    it = 0
    while done < horizon:
        core.allocation_row(0, s_policy, s_exp_f, s_n_arms, s_imp, s_clk, s_conv, s_mu, s_has_prior, s_active, s_cand,
                            s_ucb, s_feats, s_z, s_bvec, s_bai_done, p)
        w = w_step
        burn_left = s_exp_f[0, core.F_BURN_IN] - s_exp_f[0, core.F_STEPS]
        if burn_left > 0.0:  # burn-in ends inside the step: a step of its own, so it weighs what it lasts
            w = min(w, burn_left)
        w = min(w, horizon - done)
        it += 1
        if it > max_steps + 1:  # float rounding of the burn-in step: the rest in one last step
            w = horizon - done
        for k in range(K):
            out[k] += p[k] * w
            in_w[k] = p[k] * w
            in_c[k] = in_w[k] * means[k]
        done += w
        if done < horizon:
            core.engine(core.MODE_UPDATE, rows, 1, keys, uni, False, 0, False, slots, in_w, in_c, in_v, ctr,
                        s_policy, s_exp_f, s_n_arms, s_imp, s_clk, s_conv, s_mu, s_has_prior, s_active, s_cand, s_ucb,
                        s_feats, s_z, s_ainv, s_bvec, s_bai_done, s_ec_committed, o_slots, o_prop, tab)
    for k in range(K):
        out[k] /= horizon


@numba.njit(**NJIT)
def edge_row(e, method, horizon, max_steps, policy, exp_f, n_arms, imp, clk, conv, mu, has_prior, active, cand, ucb,
             feats, z, ainv, bvec, bai_done, ec_committed, s_policy, s_exp_f, s_n_arms, s_imp, s_clk, s_conv, s_mu,
             s_has_prior, s_active, s_cand, s_ucb, s_feats, s_z, s_ainv, s_bvec, s_bai_done, s_ec_committed, tab, out):
    """The edge allocation of row ``e`` for ``horizon`` decisions by ``method`` (M_* codes) into ``out[:K]``."""
    if method == M_MATCHING:
        matching_row(e, exp_f, n_arms, imp, clk, conv, mu, has_prior, active, out)
    else:
        hallucinate_row(e, horizon, max_steps, policy, exp_f, n_arms, imp, clk, conv, mu, has_prior, active, cand,
                        ucb, feats, z, ainv, bvec, bai_done, ec_committed, s_policy, s_exp_f, s_n_arms, s_imp, s_clk,
                        s_conv, s_mu, s_has_prior, s_active, s_cand, s_ucb, s_feats, s_z, s_ainv, s_bvec, s_bai_done,
                        s_ec_committed, tab, out)


@numba.njit(**NJIT)
def sample_slot(K, p, u):
    """Inverse-CDF draw of an arm from ``p[:K]`` with the uniform ``u`` (-1 if p is all zero)."""
    acc = 0.0
    last = -1
    for k in range(K):
        if p[k] > 0.0:
            acc += p[k]
            last = k
            if u < acc:
                return k
    return last  # u beyond the rounded total: the last arm with mass


@numba.njit(**NJIT)
def simulate_edge(rows, steps, refresh, method, max_steps, seed, true_ctr, policy, exp_f, n_arms, imp, clk, conv, mu,
                  has_prior, active, cand, ucb, feats, z, ainv, bvec, bai_done, ec_committed, s_policy, s_exp_f,
                  s_n_arms, s_imp, s_clk, s_conv, s_mu, s_has_prior, s_active, s_cand, s_ucb, s_feats, s_z, s_ainv,
                  s_bvec, s_bai_done, s_ec_committed, tab, clicks_out):
    """Each row in ``rows`` runs ``steps`` decisions, clicks ~ Bernoulli(true_ctr), into ``clicks_out[r]``.

    ``refresh == 0``: per-decision serving (the allocation is recomputed before every
    decision); ``refresh = R``: the edge allocation for ``R`` decisions is computed every
    ``R`` decisions and served unchanged in between. Common random numbers: decision
    ``t`` of ``rows[r]`` draws its arm with a uniform that depends on (seed, r, t) only,
    and the ``n``-th impression of arm ``k`` clicks with a uniform of (seed, r, k, n) only,
    so two runs differ only where their allocations differ.
    """
    kcap = imp.shape[1]
    p = np.zeros(kcap)
    pulls = np.zeros(kcap, dtype=np.int64)
    one_row = np.zeros(1, dtype=np.int64)
    one_slot = np.zeros(1, dtype=np.int64)
    one_w = np.ones(1)
    one_c = np.zeros(1)
    one_v = np.zeros(1)
    keys = np.zeros(1, dtype=np.uint64)
    uni = np.zeros((1, 2))
    o_slots = np.zeros(1, dtype=np.int64)
    o_prop = np.zeros(1)
    base = np.uint64(seed)
    for r in range(rows.shape[0]):
        e = rows[r]
        K = n_arms[e]
        one_row[0] = e
        for k in range(kcap):
            pulls[k] = 0
        total = 0.0
        for t in range(steps):
            if refresh == 0:
                core.allocation_row(e, policy, exp_f, n_arms, imp, clk, conv, mu, has_prior, active, cand, ucb, feats,
                                    z, bvec, bai_done, p)
            elif t % refresh == 0:
                edge_row(e, method, float(refresh), max_steps, policy, exp_f, n_arms, imp, clk, conv, mu, has_prior,
                         active, cand, ucb, feats, z, ainv, bvec, bai_done, ec_committed, s_policy, s_exp_f, s_n_arms,
                         s_imp, s_clk, s_conv, s_mu, s_has_prior, s_active, s_cand, s_ucb, s_feats, s_z, s_ainv, s_bvec,
                         s_bai_done, s_ec_committed, tab, p)
            key = mix64(base + np.uint64(r * steps + t + 1) * GOLDEN)
            slot = sample_slot(K, p, uniform(key, 0))
            if slot < 0:
                continue
            ckey = mix64((base ^ np.uint64(0xC1C4)) + np.uint64((r * kcap + slot) * steps + pulls[slot] + 1) * GOLDEN)
            pulls[slot] += 1
            c = 1.0 if uniform(ckey, 0) < true_ctr[e, slot] else 0.0
            total += c
            one_slot[0] = slot
            one_c[0] = c
            core.engine(core.MODE_UPDATE, one_row, 1, keys, uni, False, 0, False, one_slot, one_w, one_c, one_v,
                        true_ctr, policy, exp_f, n_arms, imp, clk, conv, mu, has_prior, active, cand, ucb, feats, z,
                        ainv, bvec, bai_done, ec_committed, o_slots, o_prop, tab)
        clicks_out[r] = total


# ---------------------------------------------------------------------------- public wrappers


def _method_code(method: str) -> int:
    if method not in METHODS:
        raise KernelInputError(f"edge method must be one of {', '.join(METHODS)}, got {method!r}")
    return METHODS.index(method)


def _scratch_for(state: BanditState, scratch: BanditState | None, n: int = 1) -> BanditState:
    """A scratch state with ``n`` rows and the same arm and feature capacity (reused when it fits)."""
    if (scratch is not None and scratch.capacity_arms == state.capacity_arms
            and scratch.feature_dim == state.feature_dim and scratch.exp_f.shape[0] >= n):
        return scratch
    return BanditState(capacity_experiments=n, capacity_arms=state.capacity_arms, feature_dim=state.feature_dim)


def _arrays(s: BanditState) -> tuple:
    return s.update_args()


def edge_allocation(state: BanditState, row: int, horizon: float, method: str = "hallucinate",
                    scratch: BanditState | None = None, max_steps: int = EDGE_STEPS) -> np.ndarray:
    """float64[n_arms]: the allocation of ``row`` for the next ``horizon`` decisions (module docstring).

    ``scratch`` (optional) is reused between calls to save an allocation; the state is never written.
    """
    row = state._check_row(row)
    code = _method_code(method)
    if isinstance(horizon, bool) or not isinstance(horizon, (int, float, np.integer, np.floating)) \
            or not (1.0 <= float(horizon) <= 1e9):
        raise KernelInputError(f"horizon must be a number of decisions in [1, 1e9], got {horizon!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or not (1 <= max_steps <= 4096):
        raise KernelInputError(f"max_steps must be an integer in [1, 4096], got {max_steps!r}")
    k = int(state.n_arms[row])
    out = np.zeros(max(state.capacity_arms, 1))
    if k:
        sc = _scratch_for(state, scratch)
        edge_row(row, code, float(horizon), int(max_steps), *_arrays(state), *_arrays(sc), core.TABLES, out)
    return out[:k].copy()


def simulate_edge_clicks(state: BanditState, rows: np.ndarray, steps: int, true_ctr: np.ndarray, seed: int,
                         refresh: int, method: str = "hallucinate", max_steps: int = EDGE_STEPS) -> np.ndarray:
    """Clicks float64[len(rows)] of :func:`simulate_edge` (``refresh = 0``: per-decision serving)."""
    rows = _check_rows(state, rows)
    code = _method_code(method)
    for name, v, lo in (("steps", steps, 0), ("refresh", refresh, 0), ("max_steps", max_steps, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise KernelInputError(f"{name} must be an integer >= {lo}, got {v!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (0 <= int(seed) < 2**64):
        raise KernelInputError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    if not isinstance(true_ctr, np.ndarray) or true_ctr.dtype != np.float64 or true_ctr.ndim != 2 \
            or true_ctr.shape[0] < state.n_experiments or true_ctr.shape[1] < int(state.n_arms.max(initial=0)):
        raise KernelInputError("true_ctr must be float64[n_experiments, arms] covering every experiment and arm")
    out = np.zeros(rows.shape[0])
    sc = _scratch_for(state, None)
    simulate_edge(rows, int(steps), int(refresh), code, int(max_steps), np.uint64(seed), np.ascontiguousarray(true_ctr),
                  *_arrays(state), *_arrays(sc), core.TABLES, out)
    state.stamp[rows] += 1
    return out
