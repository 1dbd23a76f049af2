"""The index arithmetic of each policy, one arm or one experiment at a time (@njit, scalars or rows).

LLM-2UCBs (Algorithm 1), LinUCB (Algorithm 4, kept current by Sherman-Morrison), the
confidence interval of best-arm identification (Algorithm 2) and Thompson draws
(Algorithm 3). No state layout here: :mod:`lola.kernels.core` reads the experiment rows
and calls these from its one engine loop; LLVM inlines the scalar ones.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from lola.kernels.numba_config import NJIT
from lola.kernels.rng import beta_draw


@numba.njit(**NJIT)
def ucb2_scores(e, n_arms, alpha_sqrt_log_t, n_aux, lam, imp, clk, conv, mu, has_prior, active, out):
    """LLM-2UCBs index of Algorithm 1 for one experiment, into ``out[:n_arms]``.

    ``n = 1 + impressions``, ``c = clicks + lam * conversions`` (n starts at 1, c at 0).
    U1 = c/n + a/sqrt(n), U2 = (c + mu n_aux)/(n + n_aux) + a/sqrt(n + n_aux) with
    ``a = alpha sqrt(log t)``; the index is min(U1, U2). Arms without a prior have
    U2 = +inf (plain UCB). ``n_aux = inf`` is the pure-LLM limit: the index is ``mu``.
    ``n_aux = 0`` gives U2 == U1 bit for bit. Inactive arms get -inf.
    """
    inf_aux = math.isinf(n_aux)
    for k in range(n_arms):
        n = 1.0 + imp[e, k]
        c = clk[e, k] + lam * conv[e, k]
        u1 = c / n + alpha_sqrt_log_t / math.sqrt(n)
        if inf_aux:
            u2 = mu[e, k]
            s = u2 if has_prior[e, k] else u1
        else:
            n2 = n + n_aux
            u2 = (c + mu[e, k] * n_aux) / n2 + alpha_sqrt_log_t / math.sqrt(n2)
            s = min(u1, u2) if has_prior[e, k] else u1
        out[k] = s if active[e, k] else -np.inf


@numba.njit(**NJIT)
def ucb_cache_values(n_obs, c, mu, has_prior, active, n_aux):
    """One arm's LLM-2UCBs cache (m1, s1, m2, s2) from scalars (Algorithm 1, lines 5-6).

    ``n = 1 + n_obs`` (n starts at 1, c at 0). m1 = c/n, s1 = 1/sqrt(n);
    m2 = (c + mu n_aux)/(n + n_aux), s2 = 1/sqrt(n + n_aux), so that the index is
    min(m1 + a s1, m2 + a s2) with a = alpha sqrt(log t). No prior: m2 = +inf (U2 = +inf,
    plain UCB). n_aux = inf with a prior: m1 = +inf, m2 = mu, s2 = 0 (pure-LLM greedy, no
    NaN). Inactive: -inf. ``n_aux = 0`` gives m2 == m1 and s2 == s1 bit for bit.
    Scalar arguments only, so LLVM inlines it into the engine loop.
    """
    if not active:
        return -np.inf, 0.0, -np.inf, 0.0
    n = 1.0 + n_obs
    inv_n = 1.0 / n
    m1 = c * inv_n
    s1 = math.sqrt(inv_n)
    if not has_prior:
        return m1, s1, np.inf, 0.0
    if math.isinf(n_aux):
        return np.inf, 0.0, mu, 0.0
    inv_n2 = 1.0 / (n + n_aux)
    return m1, s1, (c + mu * n_aux) * inv_n2, math.sqrt(inv_n2)


@numba.njit(**NJIT)
def ucb_index(m1, s1, m2, s2, a):
    """Branch-free LLM-2UCBs index from the cache: min(U1, U2) = min(m1 + a s1, m2 + a s2)."""
    return min(m1 + a * s1, m2 + a * s2)


@numba.njit(**NJIT)
def linucb_scores(e, n_arms, lin_alpha, feats, z, bvec, active, out):
    """LinUCB index (Algorithm 4, line 8): theta.x_k + alpha sqrt(x_k' A^-1 x_k).

    ``z[k] = A^-1 x_k`` is kept current by the Sherman-Morrison update, so the score is
    ``z_k . b + alpha sqrt(x_k . z_k)``: O(K d) per decision, no matrix product.
    """
    d = bvec.shape[1]
    for k in range(n_arms):
        mean = 0.0
        var = 0.0
        for j in range(d):
            zj = z[e, k, j]
            mean += zj * bvec[e, j]
            var += feats[e, k, j] * zj
        s = mean + lin_alpha * math.sqrt(max(var, 0.0))
        out[k] = s if active[e, k] else -np.inf


@numba.njit(**NJIT)
def bai_interval(n_aux, n, c, mu, has_prior, n_arms, delta, bernstein):
    """(mean, radius) of Algorithm 2 for one arm: T = n_aux + n prior-and-real pulls.

    Hoeffding (the paper's): C(T) = sqrt(L / (2 T)) with L = log(4 K T^2 / delta), an
    anytime bound with a union over arms and rounds. With ``bernstein`` the same L goes
    into the empirical-Bernstein radius of Maurer and Pontil (2009),
    C(T) = sqrt(2 V L / T) + 7 L / (3 (T - 1)), V = T m (1 - m) / (T - 1) the sample
    variance of T Bernoulli draws with mean m. At CTRs near 1 % V is ~0.01 instead of
    Hoeffding's worst case 1/4, so certifying a gap takes roughly 10x fewer pulls.
    Infinite for T = 0 (and T <= 1 with ``bernstein``), zero for n_aux = inf.
    """
    if has_prior and math.isinf(n_aux):
        return mu, 0.0
    prior = n_aux if has_prior else 0.0
    tk = prior + n
    if tk <= 0.0:
        return 0.0, np.inf
    mean = (mu * prior + c) / tk
    log_term = math.log(4.0 * n_arms * tk * tk / delta)
    if not bernstein:
        return mean, math.sqrt(log_term / (2.0 * tk))
    if tk <= 1.0:
        return mean, np.inf
    var = max(mean * (1.0 - mean), 0.0) * tk / (tk - 1.0)
    return mean, math.sqrt(2.0 * var * log_term / tk) + 7.0 * log_term / (3.0 * (tk - 1.0))


@numba.njit(**NJIT)
def ts_beta_params(n, c, mu, has_prior, prior_n, a0, b0):
    """One arm's TS posterior Beta(a0 + n_aux mu + c, b0 + n_aux (1-mu) + n - c) (Algorithm 3).

    ``prior_n = 0`` is plain Beta-Bernoulli TS. ``n - c`` is floored at 0 (conversion
    rewards can exceed one per impression). ``a = -1`` marks a point mass at ``mu`` (an
    arm with a prior and ``n_aux = inf``: the greedy limit). The one definition that
    :func:`ts_theta` draws from and :mod:`lola.kernels.allocation` integrates over.
    """
    if has_prior and math.isinf(prior_n):
        return -1.0, 0.0
    pa = a0 + c
    pb = b0 + max(n - c, 0.0)
    if has_prior:
        pa += prior_n * mu
        pb += prior_n * (1.0 - mu)
    return pa, pb


@numba.njit(**NJIT)
def ts_theta(n, c, mu, has_prior, active, prior_n, a0, b0, key, j):
    """One arm's posterior draw from :func:`ts_beta_params`; exactly ``mu`` for a point mass.

    Inactive arms get -inf. Scalar arguments only (LLVM inlines it). Returns (draw, next counter).
    """
    if not active:
        return -np.inf, j
    pa, pb = ts_beta_params(n, c, mu, has_prior, prior_n, a0, b0)
    return ts_draw(pa, pb, mu, True, key, j)


@numba.njit(**NJIT)
def ts_draw(pa, pb, mu, active, key, j):
    """A draw from Beta(pa, pb) (:func:`ts_beta_params`'s output; ``mu`` for a point mass,
    ``pa < 0``; -inf for an inactive arm). Returns (draw, next counter)."""
    if not active:
        return -np.inf, j
    if pa < 0.0:  # point mass (a0 > 0 is enforced, so a real posterior never has a < 0)
        return mu, j
    return beta_draw(pa, pb, key, j)


@numba.njit(**NJIT)
def ts_thetas(e, n_arms, prior_n, a0, b0, lam, imp, clk, conv, mu, has_prior, active, key, j, out):
    """:func:`ts_theta` for every arm of experiment ``e`` into ``out``; returns the next counter."""
    for k in range(n_arms):
        out[k], j = ts_theta(imp[e, k], clk[e, k] + lam * conv[e, k], mu[e, k], has_prior[e, k], active[e, k],
                             prior_n, a0, b0, key, j)
    return j


#: Below this discount factor the data part of A is forgotten outright (A = ridge I):
#: scaling A^-1 by 1/f would otherwise overflow (gamma ** w underflows to 0).
LINEAR_FORGET_BELOW = 1e-12


@numba.njit(**NJIT)
def linear_discount(e, K, f, ridge, feats, z, ainv, bvec, ubuf):
    """Discount the data, keep the ridge: A <- f A + (1 - f) ridge I, b <- f b.

    A^-1 and the cache z first scale by 1/f, then d Sherman-Morrison steps add
    (1 - f) ridge e_j e_j' back, so a feature direction that gets no data keeps
    A = ridge (A^-1 never grows without bound). For f below
    :data:`LINEAR_FORGET_BELOW` the data is dropped: A = ridge I, b = 0.
    """
    d = bvec.shape[1]
    if f < LINEAR_FORGET_BELOW:
        inv_r = 1.0 / ridge
        for p in range(d):
            bvec[e, p] = 0.0
            for q in range(d):
                ainv[e, p, q] = inv_r if p == q else 0.0
        for k in range(K):
            for p in range(d):
                z[e, k, p] = feats[e, k, p] * inv_r
        return
    inv_f = 1.0 / f
    for p in range(d):
        bvec[e, p] *= f
        for q in range(d):
            ainv[e, p, q] *= inv_f
    for k in range(K):
        for p in range(d):
            z[e, k, p] *= inv_f
    wj = (1.0 - f) * ridge
    for j in range(d):
        for p in range(d):
            ubuf[p] = ainv[e, p, j]  # A^-1 e_j (A^-1 is symmetric)
        coef = wj / (1.0 + wj * ubuf[j])
        for p in range(d):
            cp = coef * ubuf[p]
            for q in range(d):
                ainv[e, p, q] -= cp * ubuf[q]
        for k in range(K):
            g = coef * z[e, k, j]  # (A^-1 e_j) . x_k = e_j . A^-1 x_k
            for p in range(d):
                z[e, k, p] -= g * ubuf[p]


@numba.njit(**NJIT)
def linear_update(e, a, K, w, r, feats, z, ainv, bvec, ubuf):
    """Algorithm 4 lines 12-13 with ``w`` impressions and reward ``r``, by Sherman-Morrison.

    u = A^-1 x_a; A^-1 <- A^-1 - w u u' / (1 + w x_a' u); z_k <- z_k - coef (u . x_k) u;
    b <- b + r x_a. O(d^2 + K d); A is never re-inverted.
    """
    d = bvec.shape[1]
    for p in range(d):
        bvec[e, p] += r * feats[e, a, p]
    if w <= 0.0:
        return
    s = 0.0
    for p in range(d):
        ubuf[p] = z[e, a, p]
        s += feats[e, a, p] * ubuf[p]
    coef = w / (1.0 + w * s)
    for p in range(d):
        cp = coef * ubuf[p]
        for q in range(d):
            ainv[e, p, q] -= cp * ubuf[q]
    for k in range(K):
        ux = 0.0
        for p in range(d):
            ux += ubuf[p] * feats[e, k, p]
        g = coef * ux
        for p in range(d):
            z[e, k, p] -= g * ubuf[p]
