"""Per-experiment Bayesian statistics of click-through (@njit): P(best) and expected loss.

For each arm two Beta posteriors on clicks per impression:

* **data only**: Beta(1 + c, 1 + n - c) (uniform prior, the data alone);
* **with the prior**: the LLM prior as ``n_aux`` pseudo-impressions,
  Beta(1 + n_aux mu + c, 1 + n_aux (1 - mu) + n - c), the posterior LOLA's TS draws from
  (:func:`lola.kernels.policies.ts_beta_params`, the one definition, with a0 = b0 = 1);
  a point mass at ``mu`` for ``n_aux = inf``; the data-only one for an arm without a prior.

For each posterior family, over the active arms: ``p_best[k] = P(theta_k is the largest)``
and ``loss[k] = E[max_j theta_j - theta_k]``, by the allocation quadrature of
:mod:`lola.kernels.allocation` (:func:`~lola.kernels.allocation.best_moments`; error per
probability within ``TS_ALLOCATION_ERROR`` = 1e-6 for parameters >= 1, far inside the
issue's 0.01). ``loss`` is GrowthBook's expected loss (risk) of shipping arm k; for two
arms it is exactly E[max(theta_other - theta_k, 0)].
"""

from __future__ import annotations

import numba
import numpy as np

from lola.errors import KernelInputError
from lola.kernels.allocation import GL_S, GL_T, GL_W, best_moments
from lola.kernels.numba_config import NJIT
from lola.kernels.policies import ts_beta_params


@numba.njit(**NJIT)
def posterior_stats(K, n, c, mu, has_prior, active, n_aux, a_out, b_out, p_best, loss, outx):
    """Fill, for family f = 0 (data only) and f = 1 (with the prior), rows ``[f, :K]`` of
    ``a_out``, ``b_out`` (Beta parameters; ``a = -1`` marks a point mass at ``mu``),
    ``p_best`` and ``loss`` (NaN for inactive arms). ``outx``: scratch of length K."""
    for f in range(2):
        for k in range(K):
            ck = min(c[k], n[k])
            a_out[f, k], b_out[f, k] = ts_beta_params(n[k], ck, mu[k], has_prior[k] and f == 1, n_aux, 1.0, 1.0)
        best_moments(K, a_out[f], b_out[f], mu, active, GL_T, GL_W, GL_S, p_best[f], outx)
        e_max = 0.0
        for k in range(K):
            if active[k]:
                e_max += outx[k]
        for k in range(K):
            if not active[k]:
                loss[f, k] = np.nan
                continue
            mean = mu[k] if a_out[f, k] < 0.0 else a_out[f, k] / (a_out[f, k] + b_out[f, k])
            loss[f, k] = max(e_max - mean, 0.0)


def experiment_posteriors(impressions: np.ndarray, clicks: np.ndarray, mu: np.ndarray, has_prior: np.ndarray,
                          active: np.ndarray, n_aux: float) -> dict[str, np.ndarray]:
    """Validating wrapper of :func:`posterior_stats`: arrays ``a, b, p_best, loss`` of shape [2, K]."""
    n = np.ascontiguousarray(impressions, dtype=np.float64)
    K = n.shape[0]
    c = np.ascontiguousarray(clicks, dtype=np.float64)
    m = np.ascontiguousarray(np.nan_to_num(np.asarray(mu, dtype=np.float64), nan=0.0))
    hp = np.ascontiguousarray(has_prior, dtype=np.bool_)
    act = np.ascontiguousarray(active, dtype=np.bool_)
    if any(x.shape != (K,) for x in (c, m, hp, act)):
        raise KernelInputError("posterior statistics: impressions, clicks, mu, has_prior, active need one shape [K]")
    if not (np.isfinite(n).all() and np.isfinite(c).all()) or (n < 0).any() or (c < 0).any():
        raise KernelInputError("posterior statistics: counts must be finite and >= 0")
    if ((m[hp] < 0) | (m[hp] > 1)).any():
        raise KernelInputError("posterior statistics: prior CTRs must lie in [0, 1]")
    n_aux = float(n_aux)
    if not n_aux >= 0:
        raise KernelInputError("posterior statistics: n_aux must be >= 0")
    out = {name: np.empty((2, K)) for name in ("a", "b", "p_best", "loss")}
    posterior_stats(K, n, c, m, hp, act, n_aux, out["a"], out["b"], out["p_best"], out["loss"], np.empty(K))
    return out
