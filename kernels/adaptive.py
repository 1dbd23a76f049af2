"""Adaptive prior strength for LLM-2UCBs (policy ``llm2ucb_eb``).

LOLA's fixed ``n_aux`` trusts a good prior too little and a bad prior too much.
This module estimates, per experiment and online, how many pseudo-impressions
the LLM prior is worth, from the gap between prior and observed CTRs
(empirical Bayes). The LLM-2UCBs kernel calls :func:`adaptive_n_aux` for
experiments whose policy is ``llm2ucb_eb`` and uses the result in place of the
fixed ``n_aux``; everything else about Algorithm 1 is unchanged.

Owner: the replay engineer (issue 5) tunes the estimator; the signature is a
contract with the kernels engineer and must not change.
"""

from __future__ import annotations

import numba
import numpy as np

from lola.kernels.numba_config import NJIT


@numba.njit(**NJIT)
def adaptive_n_aux(n_aux0, strength, impressions, clicks, mu_aux, usable):
    """Effective prior sample size for one experiment.

    Parameters
    ----------
    n_aux0 : float
        The offline-tuned prior strength, used as the hyperprior's centre.
    strength : float
        How many arms' worth of evidence the hyperprior counts as (>= 0).
    impressions, clicks, mu_aux : float64[K]
        One experiment's (possibly discounted) statistics and prior CTRs.
    usable : bool[K]
        Arms that are active and have a prior.

    Returns
    -------
    float
        ``n_aux`` to use in Algorithm 1 for this experiment now.

    Notes
    -----
    Method of moments: a Beta prior with mean ``mu`` worth ``m`` pseudo-draws has
    variance ``mu (1 - mu) / (m + 1)``. The observed squared gap
    ``(c/n - mu)^2`` estimates that variance plus the sampling noise
    ``p (1 - p) / n``. Precision-weighted with ``strength`` pseudo-arms at
    ``n_aux0``.
    """
    num = 0.0
    den = 0.0
    for k in range(impressions.shape[0]):
        n = impressions[k]
        if not usable[k] or n < 1.0:
            continue
        mu = min(max(mu_aux[k], 1e-6), 1.0 - 1e-6)
        p = clicks[k] / n
        excess = (p - mu) ** 2 - mu * (1.0 - mu) / n
        # Weight each arm by how informative its gap is (more impressions, more weight).
        w = n / (n + n_aux0 + 1.0)
        num += w * max(excess, 0.0) / (mu * (1.0 - mu))
        den += w
    if not np.isfinite(n_aux0):
        return n_aux0
    prior_var_ratio = 1.0 / (n_aux0 + 1.0)
    ratio = (strength * prior_var_ratio + num) / (strength + den) if strength + den > 0.0 else prior_var_ratio
    ratio = max(ratio, 1e-9)
    return max(1.0 / ratio - 1.0, 0.0)
