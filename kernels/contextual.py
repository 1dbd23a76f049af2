"""Contextual policies of the paper's appendix G.3: LLM-LinUCB with user context (Algorithm 4)
and LLM-FALCON (Algorithm 5). Pure @njit functions over preallocated arrays; the validating
wrapper is :class:`lola.kernels.contextual_state.ContextualState`.

Features (docs/contextual.md)
-----------------------------
Each arm k has text features ``a_k`` (float64[da], ``a_k[0] = 1``: the arm's own intercept,
then the LLM prior CTR and the reduced text embedding); each decision has user features
``u`` (float64[du], ``u[0] = 1``, from :mod:`lola.stream.context`). The model's vector is
their interaction ``x = a_k (x) u`` (Kronecker product, d = da du), so it contains ``a_k``
(times the user intercept), ``u`` (times the arm intercept) and every product. One shared
``theta`` over x: arms with similar text share what they learn about each user segment.

Because x is a Kronecker product, the per-decision quadratic forms factor: with
``G[i, j] = u' Ainv[block i, block j] u`` (one pass over A^-1, d^2) every arm's
``x_k' A^-1 x_k = a_k' G a_k`` costs da^2, and ``theta . x_k = a_k . (Theta u)``. A decision
is d^2 + K da^2 instead of K d^2; an update (Sherman-Morrison, theta kept current in O(d))
is 2 d^2.

LLM-FALCON: the oracle ``W`` (least squares over the same x) is fixed within an epoch;
``update`` accumulates the Gram matrix and marks ``retrain_due`` at each epoch boundary
(epochs double from ``first_epoch`` impressions); the retrain (a d x d solve) runs off the
decision path. Sampling is inverse-gap weighting with ``gamma_m = max(1, gamma_scale
sqrt(K tau_{m-1}))`` (Vowpal Wabbit SquareCB's form with a tuned scale) and the exact
propensity of the sampled arm.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from lola.kernels.core import tied_argmax
from lola.kernels.numba_config import NJIT
from lola.kernels.rng import GOLDEN, mix64, uniform

ALG_LINUCB = 0
ALG_FALCON = 1
ALGORITHMS = {"linucb": ALG_LINUCB, "falcon": ALG_FALCON}

# Columns of ``par[E, N_PAR]``.
C_ALPHA = 0        # LinUCB confidence scale
C_RIDGE = 1        # A starts at ridge * I
C_GAMMA_SCALE = 2  # FALCON: gamma_m = max(1, gamma_scale sqrt(K tau_{m-1}))
C_GAMMA = 3        # FALCON: the current epoch's gamma_m
C_T = 4            # impressions so far (tau)
C_EPOCH_END = 5    # FALCON: impressions at which the current epoch ends
C_EPOCH = 6        # FALCON: current epoch m (1-based)
N_PAR = 7


@numba.njit(**NJIT)
def kron_into(a, u, da, du, out):
    """out[i du + j] = a[i] u[j]: the interaction vector x of one arm and one user."""
    for i in range(da):
        ai = a[i]
        for j in range(du):
            out[i * du + j] = ai * u[j]


@numba.njit(**NJIT)
def igw_probabilities(n, scores, active, gamma, best, out):
    """Inverse-gap weighting (Algorithm 5 line 10) into ``out``: 1/(K + gamma (f_best - f_k)) for
    each active arm but ``best``, the rest on ``best``. K counts active arms only."""
    k_act = 0
    for k in range(n):
        if active[k]:
            k_act += 1
    rest = 0.0
    for k in range(n):
        if active[k] and k != best:
            p = 1.0 / (k_act + gamma * (scores[best] - scores[k]))
            out[k] = p
            rest += p
        else:
            out[k] = 0.0
    out[best] = 1.0 - rest


@numba.njit(**NJIT)
def ctx_decide(e, u, key, algo, par, n_arms, active, arm_x, ainv, theta, wts, h, g, tu, scores, probs):
    """One decision for experiment ``e`` and user features ``u``; the state is only read.

    LinUCB: argmax of theta.x_k + alpha sqrt(x_k' A^-1 x_k) (ties: uniform by ``u_1``,
    propensity 1/#tied). FALCON: inverse-gap weighting around the oracle's best arm
    (ties: the first), arm drawn by ``u_0``, propensity its exact probability.
    Returns (slot, propensity); (-1, 0.0) without an active arm.
    """
    da = arm_x.shape[2]
    du = u.shape[0]
    K = n_arms[e]
    falcon = algo[e] == ALG_FALCON
    w = wts[e] if falcon else theta[e]
    for i in range(da):  # Theta u (Theta = the weights reshaped da x du)
        acc = 0.0
        for j in range(du):
            acc += w[i * du + j] * u[j]
        tu[i] = acc
    if not falcon:
        ai = ainv[e]
        for p in range(da * du):  # h[p, j] = A^-1[p, block j] u
            row = ai[p]
            for jb in range(da):
                acc = 0.0
                off = jb * du
                for q in range(du):
                    acc += row[off + q] * u[q]
                h[p, jb] = acc
        for ib in range(da):  # G[i, j] = u' A^-1[block i, block j] u
            for jb in range(da):
                acc = 0.0
                for q in range(du):
                    acc += u[q] * h[ib * du + q, jb]
                g[ib, jb] = acc
    alpha = par[e, C_ALPHA]
    for k in range(K):
        if not active[e, k]:
            scores[k] = -np.inf
            continue
        a = arm_x[e, k]
        mean = 0.0
        for i in range(da):
            mean += a[i] * tu[i]
        if falcon:
            scores[k] = mean
            continue
        quad = 0.0
        for i in range(da):
            acc = 0.0
            for j in range(da):
                acc += g[i, j] * a[j]
            quad += a[i] * acc
        scores[k] = mean + alpha * math.sqrt(max(quad, 0.0))
    # FALCON's greedy arm is the first of the tied (u = 0); LinUCB breaks ties uniformly
    slot, nt, _ = tied_argmax(K, scores, 0.0 if falcon else uniform(key, 1))
    if slot < 0:
        return -1, 0.0
    if falcon:
        igw_probabilities(K, scores, active[e], par[e, C_GAMMA], slot, probs)
        u0 = uniform(key, 0)
        acc = 0.0
        pick = slot
        for k in range(K):
            if probs[k] > 0.0:
                acc += probs[k]
                if u0 < acc:
                    pick = k
                    break
        return pick, probs[pick]
    return slot, 1.0 / nt


@numba.njit(**NJIT)
def ctx_learn(e, slot, u, w, rew, algo, par, arm_x, ainv, bvec, theta, gram, retrain_due, n_arms, x, v, h, use_h):
    """Train on one (user, arm, impressions w, reward r).

    A += w x x', b += r x with x = a_slot (x) u; A^-1 by Sherman-Morrison and theta = A^-1 b
    kept current in O(d): theta += v (r - c (v.b + r s)), v = A^-1 x, s = x.v,
    c = w / (1 + w s) (LinUCB rows). FALCON rows only add w x x' to the lower triangle of
    ``gram`` and r x to b and, when the impressions reach the epoch's end, start the next
    epoch (gamma_m from tau_{m-1}) and set ``retrain_due`` (the oracle is refit off the
    decision path; :func:`solve_spd` reads the lower triangle only). With ``use_h`` the
    decision's ``h = A^-1 (I (x) u)`` (same user, state unchanged since) gives
    v = h a_slot in d da operations instead of d^2.
    """
    da = arm_x.shape[2]
    du = u.shape[0]
    d = da * du
    a = arm_x[e, slot]
    kron_into(a, u, da, du, x)
    if algo[e] == ALG_FALCON:  # the oracle needs only the Gram matrix (lower triangle) and b
        for p in range(d):
            bvec[e, p] += rew * x[p]
        if w > 0.0:
            for p in range(d):
                wp = w * x[p]
                for q in range(p + 1):
                    gram[e, p, q] += wp * x[q]
            par[e, C_T] += w
            if par[e, C_T] >= par[e, C_EPOCH_END]:
                tau = par[e, C_T]
                par[e, C_EPOCH] += 1.0
                par[e, C_EPOCH_END] = 2.0 * tau
                par[e, C_GAMMA] = max(1.0, par[e, C_GAMMA_SCALE] * math.sqrt(n_arms[e] * tau))
                retrain_due[e] = True
        return
    ai = ainv[e]
    s = 0.0
    vb = 0.0
    for p in range(d):
        acc = 0.0
        if use_h:
            for i in range(da):
                acc += h[p, i] * a[i]
        else:
            for q in range(d):
                acc += ai[p, q] * x[q]
        v[p] = acc
        s += x[p] * acc
        vb += acc * bvec[e, p]
    c = w / (1.0 + w * s) if w > 0.0 else 0.0
    gain = rew - c * (vb + rew * s)
    for p in range(d):
        theta[e, p] += gain * v[p]
        bvec[e, p] += rew * x[p]
    if w > 0.0:
        for p in range(d):
            cp = c * v[p]
            for q in range(d):
                ai[p, q] -= cp * v[q]
        par[e, C_T] += w


@numba.njit(**NJIT)
def solve_spd(a, b, out):
    """out = a^-1 b for a symmetric positive definite ``a`` given by its lower triangle (Cholesky;
    ``a`` is not modified).

    The FALCON oracle fit: small (d <= 64), so a hand-written Cholesky keeps it inside
    @njit (numba's np.linalg needs SciPy's LAPACK, an optional extra here)."""
    d = b.shape[0]
    L = np.zeros((d, d))
    for i in range(d):
        for j in range(i + 1):
            acc = a[i, j]
            for k in range(j):
                acc -= L[i, k] * L[j, k]
            if i == j:
                L[i, i] = math.sqrt(max(acc, 1e-300))
            else:
                L[i, j] = acc / L[j, j]
    y = np.empty(d)
    for i in range(d):
        acc = b[i]
        for k in range(i):
            acc -= L[i, k] * y[k]
        y[i] = acc / L[i, i]
    for i in range(d - 1, -1, -1):
        acc = y[i]
        for k in range(i + 1, d):
            acc -= L[k, i] * out[k]
        out[i] = acc / L[i, i]


@numba.njit(**NJIT)
def ctx_select(rows, users, keys, seed, use_keys, algo, par, n_arms, active, arm_x, ainv, theta, wts, out_slots,
               out_prop):
    """:func:`ctx_decide` for each row with user features ``users[i]`` (the state is only read)."""
    da = arm_x.shape[2]
    kcap = arm_x.shape[1]
    h = np.empty((ainv.shape[1], da))
    g = np.empty((da, da))
    tu = np.empty(da)
    scores = np.empty(kcap)
    probs = np.empty(kcap)
    base = np.uint64(seed)
    for r in range(rows.shape[0]):
        key = keys[r] if use_keys else mix64(base + np.uint64(r + 1) * GOLDEN)
        out_slots[r], out_prop[r] = ctx_decide(rows[r], users[r], key, algo, par, n_arms, active, arm_x, ainv, theta,
                                               wts, h, g, tu, scores, probs)


@numba.njit(**NJIT)
def ctx_update(rows, slots, users, w_in, r_in, algo, par, arm_x, ainv, bvec, theta, gram, retrain_due, n_arms):
    """:func:`ctx_learn` for each row, in order."""
    d = ainv.shape[1]
    x = np.empty(d)
    v = np.empty(d)
    h = np.empty((d, arm_x.shape[2]))
    for r in range(rows.shape[0]):
        ctx_learn(rows[r], slots[r], users[r], w_in[r], r_in[r], algo, par, arm_x, ainv, bvec, theta, gram,
                  retrain_due, n_arms, x, v, h, False)


@numba.njit(**NJIT)
def ctx_simulate(rows, users, seg, ctr, seed, algo, par, n_arms, active, arm_x, ainv, bvec, theta, gram, wts,
                 retrain_due, out_slots, out_prop, out_click):
    """Fused decide + learn per row in order (replays, benchmarks): decision r serves
    ``rows[r]`` to a user with features ``users[r]`` from segment ``seg[r]``; the click is
    Bernoulli(``ctr[rows[r], seg[r], slot]``) and is learned at once. FALCON oracles are
    refit at each epoch boundary before the next decision (in the worker a thread does it).
    """
    d = ainv.shape[1]
    da = arm_x.shape[2]
    kcap = arm_x.shape[1]
    h = np.empty((d, da))
    g = np.empty((da, da))
    tu = np.empty(da)
    scores = np.empty(kcap)
    probs = np.empty(kcap)
    x = np.empty(d)
    v = np.empty(d)
    base = np.uint64(seed)
    clicks = 0.0
    for r in range(rows.shape[0]):
        e = rows[r]
        key = mix64(base + np.uint64(r + 1) * GOLDEN)
        slot, prop = ctx_decide(e, users[r], key, algo, par, n_arms, active, arm_x, ainv, theta, wts, h, g, tu,
                                scores, probs)
        out_slots[r] = slot
        out_prop[r] = prop
        if slot < 0:
            out_click[r] = 0.0
            continue
        c = 1.0 if uniform(key, 2) < ctr[e, seg[r], slot] else 0.0
        out_click[r] = c
        clicks += c
        ctx_learn(e, slot, users[r], 1.0, c, algo, par, arm_x, ainv, bvec, theta, gram, retrain_due, n_arms, x, v, h,
                  algo[e] != ALG_FALCON)
        if retrain_due[e]:
            solve_spd(gram[e], bvec[e], wts[e])
            retrain_due[e] = False
    return clicks
