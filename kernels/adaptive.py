"""Adaptive prior strength for LLM-2UCBs (policy ``llm2ucb_eb``).

LOLA's fixed ``n_aux`` trusts a good prior too little and a bad prior too much.
This module estimates, per experiment and online, how many pseudo-impressions
the LLM prior is worth, from the gap between prior and observed CTRs
(empirical Bayes). The LLM-2UCBs kernel calls :func:`adaptive_n_aux` for
experiments whose policy is ``llm2ucb_eb`` and uses the result in place of the
fixed ``n_aux``; everything else about Algorithm 1 is unchanged.

The signature ``(n_aux0, strength, n, c, mu, usable) -> n_aux`` is what the engine
calls; the replay tunes ``n_aux0`` and ``strength`` (``eb_strength``) around it.
Editing this file: see the cache note in :mod:`lola.kernels.numba_config`.
"""

from __future__ import annotations

import numba
import numpy as np

from lola.kernels.numba_config import NJIT

# The estimate may lower n_aux at most this factor below n_aux0: a handful of
# noisy arms must not turn the policy into plain UCB.
MAX_FACTOR = 16.0
# ... and never raises it above n_aux0. On the Upworthy tune split, letting the
# data raise the prior's weight (up to 16x) lost 0.1-1% of clicks at every
# horizon, while lowering-only was neutral at short and ahead at long horizons;
# a prior that deserves more trust gets it from the tuned n_aux0 instead.
MAX_UP = 1.0
_MU_EPS = 1e-6


@numba.njit(**NJIT)
def adaptive_n_aux(n_aux0, strength, impressions, clicks, mu_aux, usable):
    """Effective prior sample size for one experiment (empirical Bayes, method of moments).

    Parameters
    ----------
    n_aux0 : float
        The offline-tuned prior strength: the hyperprior's centre, the upper
        bound, and what is returned before any data. ``inf`` (pure LLM) and
        ``0`` (plain UCB) are returned unchanged.
    strength : float
        Weight of the hyperprior, in arms observed without sampling noise
        (>= 0). Large values keep ``n_aux`` near ``n_aux0``; 0 trusts the data
        alone.
    impressions, clicks, mu_aux : float64[K]
        One experiment's (possibly discounted) statistics and prior CTRs.
    usable : bool[K]
        Arms that are active and have a prior.

    Returns
    -------
    float
        ``n_aux`` to use in Algorithm 1 (LOLA, paper 002) for this experiment now,
        within ``[n_aux0 / MAX_FACTOR, n_aux0 * MAX_UP]``.

    Notes
    -----
    Read the LLM prior as a Beta distribution with mean ``mu`` worth ``m``
    pseudo-draws: the arm's true CTR varies around ``mu`` with variance
    ``mu (1 - mu) / (m + 1)``; call ``r = 1 / (m + 1)`` the variance ratio.
    For an arm with ``n`` impressions and observed rate ``p = c / n``,

        r_k = ((p - mu)^2 - mu (1 - mu) / n) / (mu (1 - mu))

    is an unbiased estimate of ``r`` (the squared gap minus its sampling
    noise). It is not clamped per arm: clamping each noisy term at zero would
    bias every estimate towards a weaker prior. Its variance is about
    ``2 (r + 1/n)^2``, so each arm gets the inverse-variance weight
    ``(n / (n + n_aux0 + 1))^2`` (normalised so an arm seen without noise
    weighs 1).

    LLM priors are mostly wrong about an experiment's *level* (the article and
    image set every headline's CTR), and that shared gap is seen much sooner in
    the pooled data than arm by arm, so the experiment's pooled gap
    ``(sum c - sum n mu) / sum n`` enters as one more term of the same form,
    with ``N = sum n`` impressions. The hyperprior ``r0 = 1 / (n_aux0 + 1)``
    adds ``strength`` noise-free arms. The pooled ratio ``r`` gives
    ``n_aux = 1 / r - 1``.
    """
    if not np.isfinite(n_aux0) or n_aux0 <= 0.0:
        return n_aux0
    r0 = 1.0 / (n_aux0 + 1.0)
    num = strength * r0
    den = strength
    n_tot = 0.0
    c_tot = 0.0
    m_tot = 0.0
    v_tot = 0.0
    for k in range(impressions.shape[0]):
        n = impressions[k]
        if not usable[k] or n < 1.0:
            continue
        mu = min(max(mu_aux[k], _MU_EPS), 1.0 - _MU_EPS)
        var1 = mu * (1.0 - mu)
        gap = clicks[k] / n - mu
        r_k = (gap * gap - var1 / n) / var1
        w = n / (n + n_aux0 + 1.0)
        w = w * w
        num += w * r_k
        den += w
        n_tot += n
        c_tot += clicks[k]
        m_tot += n * mu
        v_tot += n * var1
    if n_tot >= 1.0:
        vbar = v_tot / n_tot
        gbar = (c_tot - m_tot) / n_tot
        r_pool = (gbar * gbar - vbar / n_tot) / vbar
        w = n_tot / (n_tot + n_aux0 + 1.0)
        w = w * w
        num += w * r_pool
        den += w
    if den <= 0.0:
        return n_aux0
    ratio = num / den
    lo = n_aux0 / MAX_FACTOR
    hi = n_aux0 * MAX_UP
    if ratio <= 1.0 / (hi + 1.0):
        return hi
    m = 1.0 / ratio - 1.0
    return min(max(m, lo), hi)
