"""TS's reference posterior: the refresh rule and the reference's cached allocation (@njit).

A TS/LLM-TS decision draws from the posterior as of the last refresh (docs/kernels.md, "TS
refresh"), kept in rows ``U_TS_A``/``U_TS_B`` of the per-arm cache ``ucb``; its allocation
(``U_TS_P``) is the propensity. ``F_TS_REF`` of ``exp_f`` says what is current. The engine
(:mod:`lola.kernels.core`) inlines :func:`ts_reference` with :func:`ts_moved`, the one rule.
"""

from __future__ import annotations

import numba

from lola.kernels.allocation import GL_S, GL_T, GL_W, ts_allocation
from lola.kernels.layout import (F_LAMBDA, F_N_AUX, F_TS_A0, F_TS_B0, F_TS_REF, F_TS_REFRESH, REF_ALLOCATION,
                                 REF_NONE, REF_POSTERIOR, U_TS_A, U_TS_B, U_TS_P)
from lola.kernels.numba_config import NJIT
from lola.kernels.policies import ts_beta_params


@numba.njit(**NJIT)
def ts_moved(pa, pb, ra, rb, theta):
    """The TS refresh rule for one active arm: its posterior Beta(pa, pb) moved away from the
    reference Beta(ra, rb) by more than ``theta``, ``|pa - ra| + |pb - rb| > theta (ra + rb)``
    (a point mass, ``a < 0``, appearing or vanishing always counts). Scalars only (inlined)."""
    if (pa < 0.0) != (ra < 0.0):
        return True
    return pa >= 0.0 and abs(pa - ra) + abs(pb - rb) > theta * (ra + rb)


@numba.njit(**NJIT)
def ts_reference_stale(e, K, exp_f, imp, clk, conv, mu, has_prior, active, ucb):
    """Whether the next TS decision of ``e`` takes a new reference (:func:`ts_reference`'s rule)."""
    if exp_f[e, F_TS_REF] == REF_NONE:
        return True
    n_aux = exp_f[e, F_N_AUX]
    a0 = exp_f[e, F_TS_A0]
    b0 = exp_f[e, F_TS_B0]
    lam = exp_f[e, F_LAMBDA]
    theta = exp_f[e, F_TS_REFRESH]
    for k in range(K):
        if active[e, k]:
            pa, pb = ts_beta_params(imp[e, k], clk[e, k] + lam * conv[e, k], mu[e, k], has_prior[e, k], n_aux, a0, b0)
            if ts_moved(pa, pb, ucb[e, U_TS_A, k], ucb[e, U_TS_B, k], theta):
                return True
    return False


@numba.njit(**NJIT)
def ts_reference(e, K, exp_f, imp, clk, conv, mu, has_prior, active, ucb):
    """Keep TS's reference posterior of experiment ``e`` (``ucb[e, U_TS_A/U_TS_B, :K]``) current.

    The one TS refresh rule (docs/policies.md, "TS refresh"): the reference is replaced by
    the current :func:`ts_beta_params` of every arm when there is none (``F_TS_REF`` is
    REF_NONE: a new experiment, or arms, prior or settings changed) or when an active arm's
    posterior moved, ``|a - a_ref| + |b - b_ref| > ts_refresh (a_ref + b_ref)`` (counts,
    prior and discount included; a point mass appearing or vanishing always counts). With
    ``ts_refresh = 0`` any change refreshes: the reference is the current posterior. Returns
    True when it refreshed (the cached allocation is then stale). Only decisions take a
    reference (the engine inlines this); ``core.allocation_row`` only looks.
    """
    if not ts_reference_stale(e, K, exp_f, imp, clk, conv, mu, has_prior, active, ucb):
        return False
    n_aux = exp_f[e, F_N_AUX]
    a0 = exp_f[e, F_TS_A0]
    b0 = exp_f[e, F_TS_B0]
    lam = exp_f[e, F_LAMBDA]
    for k in range(K):
        pa, pb = ts_beta_params(imp[e, k], clk[e, k] + lam * conv[e, k], mu[e, k], has_prior[e, k], n_aux, a0, b0)
        ucb[e, U_TS_A, k] = pa
        ucb[e, U_TS_B, k] = pb
    exp_f[e, F_TS_REF] = REF_POSTERIOR
    return True


@numba.njit(**NJIT)
def ts_reference_allocation(e, K, exp_f, mu, active, ucb):
    """``ucb[e, U_TS_P, :K]``: P(arm k's draw from the reference posterior is the largest), by
    quadrature (:func:`lola.kernels.allocation.ts_allocation`), computed once per reference.
    Call after :func:`ts_reference`. Returns True when it ran the quadrature."""
    if exp_f[e, F_TS_REF] == REF_ALLOCATION:
        return False
    ts_allocation(K, ucb[e, U_TS_A], ucb[e, U_TS_B], mu[e], active[e], GL_T, GL_W, GL_S, ucb[e, U_TS_P])
    exp_f[e, F_TS_REF] = REF_ALLOCATION
    return True
