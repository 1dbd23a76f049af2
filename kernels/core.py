"""The @njit policy kernels: pure functions over preallocated struct-of-arrays state.

Everything here is compiled by Numba with the flags of :mod:`lola.kernels.numba_config`.
No I/O, no logging and no allocation inside the per-decision loops; scratch buffers
are allocated once per batch call. The public, validating wrappers live in
:mod:`lola.kernels.api`; the fused benchmark/replay loop (``simulate``)
runs through exactly the same :func:`engine` loop as ``select`` and ``update`` do.

Randomness
----------
Each decision ``i`` gets a 64-bit key and reads counter-based uniforms from it
(:mod:`lola.kernels.rng`): ``u_0`` decides floor exploration, ``u_1`` breaks ties,
``u_2...`` feed Thompson draws (Marsaglia-Tsang gamma variates over ziggurat normals).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from lola.kernels.adaptive import adaptive_n_aux
from lola.kernels.allocation import ts_row_allocation
from lola.kernels.layout import (  # noqa: F401 - the layout is read as core.F_* / core.U_* too
    F_ALPHA, F_N_AUX, F_GAMMA, F_LAMBDA, F_HORIZON, F_EXPLORE_N, F_MIN_TRAFFIC, F_BURN_IN, F_TS_A0, F_TS_B0,
    F_EB_STRENGTH, F_LIN_ALPHA, F_RIDGE, F_BAI_EPS, F_BAI_GAMMA, F_BAI_DELTA, F_PROP_DRAWS, F_T, F_STEPS,
    F_SQRT_LOG_T, F_BAI_BERNSTEIN, F_TS_REFRESH, F_TS_REF, N_EXP_F, REF_NONE, REF_POSTERIOR, REF_ALLOCATION, U_M1,
    U_S1, U_M2, U_S2, U_TS_A, U_TS_B, U_TS_P, N_UCB)
from lola.kernels.numba_config import NJIT
from lola.kernels.policies import (
    bai_interval,
    linear_discount,
    linear_update,
    linucb_scores,
    ts_beta_params,
    ts_draw,
    ts_thetas,
    ucb2_scores,
    ucb_cache_values,
    ucb_index,
)
from lola.kernels.policy_table import POLICY_CODE
from lola.kernels.rng import GOLDEN, mix64, uniform
from lola.kernels.ts_reference import ts_moved, ts_reference_allocation, ts_reference_stale



# Policy codes, from the one policy table (Numba freezes these module globals as constants).
P_LLM2UCB = POLICY_CODE["llm2ucb"]
P_UCB = POLICY_CODE["ucb"]
P_PURE_LLM = POLICY_CODE["pure_llm"]
P_EC = POLICY_CODE["ec"]
P_TS = POLICY_CODE["ts"]
P_LLM_TS = POLICY_CODE["llm_ts"]
P_LINUCB = POLICY_CODE["linucb"]
P_LLM_LINUCB = POLICY_CODE["llm_linucb"]
P_BAI = POLICY_CODE["bai"]
P_LLM_BAI = POLICY_CODE["llm_bai"]
P_LLM2UCB_EB = POLICY_CODE["llm2ucb_eb"]


TABLE_N = 1 << 15


def make_tables() -> np.ndarray:
    """float64[TABLE_N]: sqrt(log t) for integer t (index 0 holds 0).

    t advances by whole impressions unless gamma < 1, so the per-update log and square
    root of Algorithm 1 become one load; other arguments are computed.
    """
    t = np.arange(TABLE_N, dtype=np.float64)
    return np.ascontiguousarray(np.sqrt(np.log(np.maximum(t, 1.0))))


TABLES = make_tables()


@numba.njit(**NJIT)
def sqrt_log(t, tab):
    """sqrt(log t) for t >= 1, from the table when t is a small integer."""
    if t < TABLE_N:
        ti = int(t)
        if ti == t:
            return tab[ti]
    return math.sqrt(math.log(t))


# --------------------------------------------------------------------------- scores


@numba.njit(**NJIT)
def refresh_ucb_arm(e, k, n_aux, lam, imp, clk, conv, mu, has_prior, active, ucb):
    """Store arm k's :func:`ucb_cache_values` into ``ucb[e, :, k]``."""
    m1, s1, m2, s2 = ucb_cache_values(imp[e, k], clk[e, k] + lam * conv[e, k], mu[e, k], has_prior[e, k],
                                      active[e, k], n_aux)
    ucb[e, U_M1, k] = m1
    ucb[e, U_S1, k] = s1
    ucb[e, U_M2, k] = m2
    ucb[e, U_S2, k] = s2


@numba.njit(**NJIT)
def refresh_experiment(e, exp_f, n_arms_arr, imp, clk, conv, mu, has_prior, active, ucb, tab):
    """Recompute experiment e's cached sqrt(log t) and every arm's LLM-2UCBs cache."""
    exp_f[e, F_SQRT_LOG_T] = sqrt_log(exp_f[e, F_T], tab)
    for k in range(n_arms_arr[e]):
        refresh_ucb_arm(e, k, exp_f[e, F_N_AUX], exp_f[e, F_LAMBDA], imp, clk, conv, mu, has_prior, active, ucb)


@numba.njit(**NJIT)
def refresh_all_range(start, end, exp_f, n_arms_arr, imp, clk, conv, mu, has_prior, active, ucb, tab):
    """:func:`refresh_experiment` for rows ``start..end-1`` (bulk registration)."""
    for e in range(start, end):
        refresh_experiment(e, exp_f, n_arms_arr, imp, clk, conv, mu, has_prior, active, ucb, tab)


@numba.njit(**NJIT)
def ucb2_cached_scores(e, n_arms, a, ucb, out):
    """:func:`ucb_index` of every arm of experiment ``e`` into ``out``."""
    for k in range(n_arms):
        out[k] = ucb_index(ucb[e, U_M1, k], ucb[e, U_S1, k], ucb[e, U_M2, k], ucb[e, U_S2, k], a)


@numba.njit(**NJIT)
def tied_argmax(n_arms, scores, u):
    """Uniformly random argmax among exact ties, using uniform ``u``.

    Returns (slot, number tied, best score); slot -1 when every score is -inf.
    """
    best = -np.inf
    nt = 0
    first = -1
    for k in range(n_arms):
        s = scores[k]
        gt = s > best
        # written as selects so LLVM emits conditional moves, not unpredictable branches
        nt = 1 if gt else nt + (1 if s == best else 0)
        first = k if gt else first
        best = s if gt else best
    if best == -np.inf:
        return -1, 0, best
    if nt == 1:
        return first, 1, best
    pick = min(int(u * nt), nt - 1)
    for k in range(n_arms):
        if scores[k] == best:
            if pick == 0:
                return k, nt, best
            pick -= 1
    return -1, 0, best


@numba.njit(**NJIT)
def count_active(e, n_arms, active):
    """Number of active arms of experiment ``e``."""
    k_act = 0
    for k in range(n_arms):
        if active[e, k]:
            k_act += 1
    return k_act


@numba.njit(**NJIT)
def traffic_floor(min_traffic, k_act):
    """The min-traffic floor per active arm, ``f = min(min_traffic, 1/K_active)``, and its total mass
    ``K_active f``: a decision plays a uniform active arm with probability ``K_active f``, so an arm's
    propensity is ``f + (1 - K_active f) p_policy``. (0, 0) without a floor or without an active arm."""
    if min_traffic <= 0.0 or k_act == 0:
        return 0.0, 0.0
    floor = min(min_traffic, 1.0 / k_act)
    return floor, floor * k_act


@numba.njit(**NJIT)
def nth_active(e, n_arms, active, idx):
    """Slot of the ``idx``-th active arm of experiment ``e``."""
    for k in range(n_arms):
        if active[e, k]:
            if idx == 0:
                return k
            idx -= 1
    return -1


@numba.njit(**NJIT)
def policy_scores(e, key, j, policy, exp_f, n_arms, imp, clk, conv, mu, has_prior, active, cand, ucb,
                  feats, z, bvec, bai_done, usable, out):
    """Scores of experiment ``e`` under its policy into ``out``; argmax (ties uniform) is the
    policy's choice. Returns (next counter, stochastic flag): TS scores are posterior draws.
    """
    K = n_arms
    lam = exp_f[e, F_LAMBDA]
    if policy == P_LLM2UCB or policy == P_UCB or policy == P_PURE_LLM or policy == P_LLM2UCB_EB:
        a = exp_f[e, F_ALPHA] * exp_f[e, F_SQRT_LOG_T]
        if policy == P_LLM2UCB_EB:
            for k in range(K):
                usable[k] = active[e, k] and has_prior[e, k]
            n_aux = adaptive_n_aux(exp_f[e, F_N_AUX], exp_f[e, F_EB_STRENGTH], imp[e, :K], clk[e, :K], mu[e, :K],
                                   usable[:K])
            ucb2_scores(e, K, a, n_aux, lam, imp, clk, conv, mu, has_prior, active, out)
        else:
            ucb2_cached_scores(e, K, a, ucb, out)
        return j, False
    if policy == P_TS or policy == P_LLM_TS:
        j = ts_thetas(e, K, exp_f[e, F_N_AUX], exp_f[e, F_TS_A0], exp_f[e, F_TS_B0], lam, imp, clk, conv, mu,
                      has_prior, active, key, j, out)
        return j, True
    if policy == P_LINUCB or policy == P_LLM_LINUCB:
        linucb_scores(e, K, exp_f[e, F_LIN_ALPHA], feats, z, bvec, active, out)
        return j, False
    if policy == P_EC:
        explore = exp_f[e, F_STEPS] < exp_f[e, F_EXPLORE_N]
        any_cand = False
        for k in range(K):
            any_cand = any_cand or (cand[e, k] and active[e, k])
        for k in range(K):
            if not active[e, k]:
                out[k] = -np.inf
            elif explore:
                out[k] = -imp[e, k]  # round-robin: fewest impressions first
            elif any_cand:
                out[k] = 0.0 if cand[e, k] else -np.inf
            else:  # committed arms all retired: best empirical mean among the rest
                out[k] = (clk[e, k] + lam * conv[e, k]) / max(imp[e, k], 1.0)
        return j, False
    # BAI / LLM-BAI (Algorithm 2). If every surviving candidate was retired, the
    # remaining active arms compete again (as E&C does), so an experiment with an
    # active arm can always be served.
    any_cand = False
    for k in range(K):
        any_cand = any_cand or (cand[e, k] and active[e, k])
    for k in range(K):
        if not (active[e, k] and (cand[e, k] or not any_cand)):
            out[k] = -np.inf
        elif bai_done[e]:
            mean, rad = bai_interval(exp_f[e, F_N_AUX], imp[e, k], clk[e, k] + lam * conv[e, k], mu[e, k],
                                     has_prior[e, k], K, exp_f[e, F_BAI_DELTA], exp_f[e, F_BAI_BERNSTEIN] > 0.5)
            out[k] = mean
        else:
            out[k] = -imp[e, k]  # pull every candidate once per round
    return j, False


@numba.njit(**NJIT)
def bai_eliminate(e, exp_f, n_arms_arr, imp, clk, conv, mu, has_prior, active, cand, bai_done):
    """Algorithm 2 lines 7-8 plus the (epsilon, gamma) stopping rule of (ST)^2 (G.1).

    Eliminate candidate k when UCB_k < max_j LCB_j - epsilon. Done when one candidate
    is left, or every candidate has LCB_k >= max_j UCB_j - epsilon - gamma (all of
    them certified within epsilon + gamma of the best).
    """
    K = n_arms_arr[e]
    row_f = exp_f[e]
    lam = row_f[F_LAMBDA]
    eps = row_f[F_BAI_EPS]
    bernstein = row_f[F_BAI_BERNSTEIN] > 0.5
    max_lcb = -np.inf
    max_ucb = -np.inf
    n_c = 0
    for k in range(K):
        if cand[e, k] and active[e, k]:
            mean, rad = bai_interval(row_f[F_N_AUX], imp[e, k], clk[e, k] + lam * conv[e, k], mu[e, k],
                                     has_prior[e, k], K, row_f[F_BAI_DELTA], bernstein)
            max_lcb = max(max_lcb, mean - rad)
            max_ucb = max(max_ucb, mean + rad)
    for k in range(K):
        if cand[e, k] and active[e, k]:
            mean, rad = bai_interval(row_f[F_N_AUX], imp[e, k], clk[e, k] + lam * conv[e, k], mu[e, k],
                                     has_prior[e, k], K, row_f[F_BAI_DELTA], bernstein)
            if mean + rad < max_lcb - eps:
                cand[e, k] = False
            else:
                n_c += 1
    done = n_c <= 1
    if not done:
        done = True
        for k in range(K):
            if cand[e, k] and active[e, k]:
                mean, rad = bai_interval(row_f[F_N_AUX], imp[e, k], clk[e, k] + lam * conv[e, k], mu[e, k],
                                         has_prior[e, k], K, row_f[F_BAI_DELTA], bernstein)
                if mean - rad < max_ucb - eps - row_f[F_BAI_GAMMA]:
                    done = False
    bai_done[e] = done


@numba.njit(**NJIT)
def ec_commit(e, exp_f, n_arms_arr, imp, clk, conv, active, cand):
    """E&C: at the end of exploration mark the best empirical arm(s) (exact ties kept;
    ``select`` then breaks them uniformly)."""
    K = n_arms_arr[e]
    lam = exp_f[e, F_LAMBDA]
    best = -np.inf
    for k in range(K):
        if active[e, k]:
            best = max(best, (clk[e, k] + lam * conv[e, k]) / max(imp[e, k], 1.0))
    for k in range(K):
        cand[e, k] = active[e, k] and (clk[e, k] + lam * conv[e, k]) / max(imp[e, k], 1.0) == best


# --------------------------------------------------------------------------- batch kernels


MODE_SELECT = 0
MODE_UPDATE = 1
MODE_SIMULATE = 2
SIM_BLOCK = 32


@numba.njit(**NJIT)
def engine(mode, rows, steps, keys, uniforms, have_uniforms, seed, want_propensity, in_slots, in_w, in_c, in_v,
           true_ctr, policy_arr, exp_f, n_arms_arr, imp, clk, conv, mu, has_prior, active, cand, ucb, feats, z,
           ainv, bvec, bai_done, ec_committed, out_slots, out_prop, tab):
    """The one decision/update loop behind ``select``, ``update`` and ``simulate``.

    ``MODE_SELECT``: decision ``i`` for experiment ``rows[i]`` with key ``keys[i]``
    (uniforms from the key stream, or ``uniforms[i]``); writes ``out_slots``/``out_prop``
    and never touches the statistics, so a batch sees the state as of the call start (TS
    may take a new reference posterior: a cache, see below).
    ``MODE_UPDATE``: applies ``(in_slots, in_w, in_c, in_v)[i]`` to ``rows[i]`` in array
    order. ``MODE_SIMULATE``: each experiment in ``rows`` runs ``steps`` decisions in
    turn, each immediately followed by its update, clicks ~ Bernoulli(true_ctr).

    One function body on purpose: passing ~20 state arrays to a non-inlined helper per
    decision costs ~100 ns (exploded array structs, reference counts), more than the
    policy itself, so the hot path calls only small helpers LLVM inlines.

    Decision rule. Burn-in: uniform over active arms while ``steps < burn_in``
    (propensity 1/K_active). Otherwise the policy's index is argmaxed with exact ties
    broken by ``u_1``; with a floor ``f = min(min_traffic, 1/K_active)`` a uniform active
    arm is played instead when ``u_0 < K_active f``; propensity
    ``f + (1 - K_active f) p_policy(slot)``, where ``p_policy = 1/#tied`` for
    deterministic indices. TS/LLM-TS draw from the reference posterior
    (:func:`lola.kernels.ts_reference.ts_reference`: the posterior as of the last refresh, refreshed when an arm
    moved by more than ``ts_refresh``; with 0 it is the current one) and ``p_policy`` is
    P(slot's draw from that reference is the largest), by quadrature once per reference
    (:func:`~lola.kernels.ts_reference.ts_reference_allocation`; with ``want_propensity``, NaN otherwise). Returns
    (clicks, sum of propensities, allocation quadratures run).

    Update rule. With gamma < 1 the experiment is discounted by ``gamma ** w`` first,
    the prior's weight ``n_aux`` included (a finite one);
    then counts add, t and steps advance by ``w``; the LLM-2UCBs cache of the arm is
    refreshed; LinUCB does Sherman-Morrison; E&C commits at the end of exploration;
    BAI eliminates.
    """
    kcap = imp.shape[1]
    usable = np.empty(kcap, dtype=np.bool_)
    scores = np.empty(kcap, dtype=np.float64)
    wins = np.empty(kcap, dtype=np.float64)
    ubuf = np.empty(max(bvec.shape[1], 1), dtype=np.float64)
    base = np.uint64(seed)
    n_rows = rows.shape[0]
    reps = steps if mode == MODE_SIMULATE else 1
    # Simulation interleaves SIM_BLOCK experiments step by step: consecutive decisions are
    # then independent (the CPU overlaps them) while the block's state stays in L1/L2.
    # Keys depend on (row, step) only, so results do not depend on this order.
    block = SIM_BLOCK if mode == MODE_SIMULATE else max(n_rows, 1)
    total = 0.0
    psum = 0.0
    n_quad = 0
    for block_start in range(0, n_rows, block):
        block_end = min(block_start + block, n_rows)
        for rep in range(reps):
            for r in range(block_start, block_end):
                e = rows[r]
                K = n_arms_arr[e]
                policy = policy_arr[e]
                # ------------------------------------------------------------ decide
                if mode == MODE_UPDATE:
                    a = in_slots[r]
                    w = in_w[r]
                    c = in_c[r]
                    v = in_v[r]
                else:
                    if mode == MODE_SELECT:
                        key = keys[r]
                    else:
                        key = mix64(base + np.uint64(r * reps + rep + 1) * GOLDEN)
                    u1 = uniforms[r, 1] if have_uniforms else uniform(key, 1)
                    slot = -1
                    prop = 0.0
                    if exp_f[e, F_STEPS] < exp_f[e, F_BURN_IN]:
                        k_act = count_active(e, K, active)
                        if k_act > 0:
                            slot = nth_active(e, K, active, min(int(u1 * k_act), k_act - 1))
                            prop = 1.0 / k_act
                    else:
                        j = 2
                        stochastic = False
                        if policy == P_LLM2UCB or policy == P_UCB or policy == P_PURE_LLM:
                            a_t = exp_f[e, F_ALPHA] * exp_f[e, F_SQRT_LOG_T]
                            for k in range(K):  # inline ucb2_cached_scores: no array-passing call per decision
                                scores[k] = ucb_index(ucb[e, U_M1, k], ucb[e, U_S1, k], ucb[e, U_M2, k],
                                                      ucb[e, U_S2, k], a_t)
                        elif policy == P_TS or policy == P_LLM_TS:
                            # a draw from the reference posterior: ts_reference inlined (no array-passing
                            # call per decision), the current (a, b) held in scores/wins meanwhile
                            ts_n = exp_f[e, F_N_AUX]
                            ts_a0 = exp_f[e, F_TS_A0]
                            ts_b0 = exp_f[e, F_TS_B0]
                            ts_lam = exp_f[e, F_LAMBDA]
                            ts_th = exp_f[e, F_TS_REFRESH]
                            stale = exp_f[e, F_TS_REF] == REF_NONE
                            for k in range(K):
                                pa, pb = ts_beta_params(imp[e, k], clk[e, k] + ts_lam * conv[e, k], mu[e, k],
                                                        has_prior[e, k], ts_n, ts_a0, ts_b0)
                                scores[k] = pa
                                wins[k] = pb
                                stale = stale or (active[e, k] and ts_moved(pa, pb, ucb[e, U_TS_A, k],
                                                                            ucb[e, U_TS_B, k], ts_th))
                            if stale:
                                for k in range(K):
                                    ucb[e, U_TS_A, k] = scores[k]
                                    ucb[e, U_TS_B, k] = wins[k]
                                exp_f[e, F_TS_REF] = REF_POSTERIOR
                            for k in range(K):
                                scores[k], j = ts_draw(ucb[e, U_TS_A, k], ucb[e, U_TS_B, k], mu[e, k], active[e, k],
                                                       key, j)
                            stochastic = True
                        elif policy == P_LINUCB or policy == P_LLM_LINUCB:
                            linucb_scores(e, K, exp_f[e, F_LIN_ALPHA], feats, z, bvec, active, scores)
                        else:
                            j, stochastic = policy_scores(e, key, j, policy, exp_f, K, imp, clk, conv, mu, has_prior,
                                                          active, cand, ucb, feats, z, bvec, bai_done, usable, scores)
                        pol_slot, nt, best = tied_argmax(K, scores, u1)
                        if pol_slot >= 0:
                            slot = pol_slot
                            floor = 0.0
                            mass = 0.0
                            if exp_f[e, F_MIN_TRAFFIC] > 0.0:
                                k_act = count_active(e, K, active)
                                floor, mass = traffic_floor(exp_f[e, F_MIN_TRAFFIC], k_act)
                                u0 = uniforms[r, 0] if have_uniforms else uniform(key, 0)
                                if u0 < mass:
                                    slot = nth_active(e, K, active, min(int(u0 / mass * k_act), k_act - 1))
                            if not stochastic:
                                p_pol = 1.0 / nt if scores[slot] == best else 0.0
                                prop = floor + (1.0 - mass) * p_pol
                            elif want_propensity:
                                # the reference's allocation: one quadrature per reference, not per decision
                                if ts_reference_allocation(e, K, exp_f, mu, active, ucb):
                                    n_quad += 1
                                prop = floor + (1.0 - mass) * ucb[e, U_TS_P, slot]
                            else:
                                prop = np.nan
                    if mode == MODE_SELECT:
                        out_slots[r] = slot
                        out_prop[r] = prop
                        continue
                    if slot < 0:
                        continue
                    a = slot
                    w = 1.0
                    c = 1.0 if uniform(key, 1_000_003) < true_ctr[e, slot] else 0.0
                    v = 0.0
                    total += c
                    psum += prop
                # ------------------------------------------------------------ update
                gamma = exp_f[e, F_GAMMA]
                linear = policy == P_LINUCB or policy == P_LLM_LINUCB
                discounted = w > 0.0 and gamma < 1.0
                if discounted:
                    f = gamma ** w
                    for k in range(K):
                        imp[e, k] *= f
                        clk[e, k] *= f
                        conv[e, k] *= f
                    exp_f[e, F_T] = 1.0 + (exp_f[e, F_T] - 1.0) * f
                    # the prior is n_aux pseudo-impressions seen before the first one: it fades
                    # like the data, so drift can escape it (inf, the pure-LLM limit, stays inf)
                    if not math.isinf(exp_f[e, F_N_AUX]):
                        exp_f[e, F_N_AUX] *= f
                    if linear:
                        linear_discount(e, K, f, exp_f[e, F_RIDGE], feats, z, ainv, bvec, ubuf)
                imp[e, a] += w
                clk[e, a] += c
                conv[e, a] += v
                exp_f[e, F_T] += w
                exp_f[e, F_STEPS] += w
                if policy == P_LLM2UCB or policy == P_UCB or policy == P_PURE_LLM or policy == P_LLM2UCB_EB:
                    if w > 0.0:
                        exp_f[e, F_SQRT_LOG_T] = sqrt_log(exp_f[e, F_T], tab)
                    n_aux = exp_f[e, F_N_AUX]
                    lam = exp_f[e, F_LAMBDA]
                    if discounted:
                        for k in range(K):
                            refresh_ucb_arm(e, k, n_aux, lam, imp, clk, conv, mu, has_prior, active, ucb)
                    else:
                        m1, s1, m2, s2 = ucb_cache_values(imp[e, a], clk[e, a] + lam * conv[e, a], mu[e, a],
                                                          has_prior[e, a], active[e, a], n_aux)
                        ucb[e, U_M1, a] = m1
                        ucb[e, U_S1, a] = s1
                        ucb[e, U_M2, a] = m2
                        ucb[e, U_S2, a] = s2
                elif linear:
                    linear_update(e, a, K, w, c + exp_f[e, F_LAMBDA] * v, feats, z, ainv, bvec, ubuf)
                elif policy == P_EC:
                    if not ec_committed[e] and exp_f[e, F_STEPS] >= exp_f[e, F_EXPLORE_N]:
                        ec_commit(e, exp_f, n_arms_arr, imp, clk, conv, active, cand)
                        ec_committed[e] = True
                elif policy == P_BAI or policy == P_LLM_BAI:
                    if not bai_done[e]:
                        bai_eliminate(e, exp_f, n_arms_arr, imp, clk, conv, mu, has_prior, active, cand, bai_done)
    return total, psum, n_quad


@numba.njit(**NJIT)
def allocation_row(e, policy_arr, exp_f, n_arms_arr, imp, clk, conv, mu, has_prior, active, cand, ucb, feats, z, bvec,
                   bai_done, out):
    """The probability that the next decision of experiment ``e`` picks each arm, into ``out[:K]``.

    The one definition of a policy's allocation (docs/kernels.md, "Allocation"): burn-in
    is uniform over active arms; otherwise ``floor + (1 - K_active floor) p_policy(k)``
    with ``p_policy = 1/#tied`` on the argmax of a deterministic index (UCB family,
    E&C, LinUCB, BAI) and, for TS/LLM-TS, P(arm k's draw from the reference posterior is
    the largest) by quadrature (the reference the next decision would use, :mod:`lola.kernels.ts_reference`,
    without taking it; :mod:`lola.kernels.allocation`). Inactive arms get 0. The decision kernel's
    propensities are this function's value at the chosen arm.
    """
    K = n_arms_arr[e]
    kcap = imp.shape[1]
    usable = np.empty(kcap, dtype=np.bool_)
    scores = np.empty(kcap, dtype=np.float64)
    row_f = exp_f[e]
    for k in range(K):
        out[k] = 0.0
    k_act = count_active(e, K, active)
    if k_act == 0:
        return
    if row_f[F_STEPS] < row_f[F_BURN_IN]:
        for k in range(K):
            out[k] = 1.0 / k_act if active[e, k] else 0.0
        return
    floor, mass = traffic_floor(row_f[F_MIN_TRAFFIC], k_act)
    policy = policy_arr[e]
    if policy == P_TS or policy == P_LLM_TS:
        # what the next decision would draw from, without taking the reference (snapshots must
        # not move it: decisions alone do, so they do not depend on when snapshots are taken)
        if ts_reference_stale(e, K, exp_f, imp, clk, conv, mu, has_prior, active, ucb):
            ts_row_allocation(K, row_f[F_N_AUX], row_f[F_TS_A0], row_f[F_TS_B0], row_f[F_LAMBDA], imp[e], clk[e],
                              conv[e], mu[e], has_prior[e], active[e], out)
        else:
            ts_reference_allocation(e, K, exp_f, mu, active, ucb)
            for k in range(K):
                out[k] = ucb[e, U_TS_P, k]
    else:
        policy_scores(e, np.uint64(0), 2, policy, exp_f, K, imp, clk, conv, mu, has_prior, active, cand, ucb, feats,
                      z, bvec, bai_done, usable, scores)
        _, nt, best = tied_argmax(K, scores, 0.0)
        for k in range(K):
            # nt == 0 only if no score beats -inf (e.g. every candidate eliminated): share 0,
            # never a division by zero that would kill the caller.
            out[k] = 1.0 / nt if nt > 0 and scores[k] == best else 0.0
    for k in range(K):
        out[k] = (floor + (1.0 - mass) * out[k]) if active[e, k] else 0.0


@numba.njit(**NJIT)
def refresh_allocations(rows, stamp, alloc_stamp, alloc, policy_arr, exp_f, n_arms_arr, imp, clk, conv, mu, has_prior,
                        active, cand, ucb, feats, z, bvec, bai_done):
    """Recompute ``alloc[e]`` (:func:`allocation_row`) for each row whose cache is stale
    (``alloc_stamp[e] != stamp[e]``); each (experiment, state version) is computed once."""
    for r in range(rows.shape[0]):
        e = rows[r]
        if alloc_stamp[e] != stamp[e]:
            allocation_row(e, policy_arr, exp_f, n_arms_arr, imp, clk, conv, mu, has_prior, active, cand, ucb, feats,
                           z, bvec, bai_done, alloc[e])
            alloc_stamp[e] = stamp[e]


@numba.njit(**NJIT)
def scores_kernel(e, key, policy_arr, exp_f, n_arms_arr, imp, clk, conv, mu, has_prior, active, cand, ucb, feats, z,
                  bvec, bai_done, out):
    """The policy's current index per arm (TS: one posterior draw from ``key``)."""
    usable = np.empty(imp.shape[1], dtype=np.bool_)
    policy_scores(e, key, 2, policy_arr[e], exp_f, n_arms_arr[e], imp, clk, conv, mu, has_prior, active, cand, ucb,
                  feats, z, bvec, bai_done, usable, out)
