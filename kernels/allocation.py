"""Thompson sampling's allocation, P(arm k has the largest posterior draw), by quadrature (@njit).

For independent Beta posteriors with densities f_k and distribution functions F_k,

    P(k is the argmax) = integral_0^1 f_k(x) prod_{j != k} F_j(x) dx,

a one-dimensional integral for any K. Method (composite Gauss-Legendre on panels
adapted to the posteriors, with the CDFs integrated on the same panels):

* each active arm's interval ``[m - W s, m + W s]`` clipped to [0, 1] (m, s its mean and
  standard deviation; ``W = 10 + 24 / sqrt(min(a, b))`` widens the window for the
  skewed, exponential-tailed posteriors of small counts) is cut into
  :data:`PANELS_PER_ARM` equal panels; the union of every arm's break points, thinned
  where arms overlap (:data:`MERGE`), makes the panels, plus geometrically graded panels
  toward 0 (1) when a clipped density has a non-integer ``a < 6`` (``b``);
* on each panel every density is evaluated at :data:`GL_NODES` Gauss-Legendre nodes
  (up to a constant, centred at its mean with ``log1p`` so huge counts lose no digits); the CDF at the
  nodes is the CDF at the panel start plus the spectral integration matrix of the
  nodes times the densities, so F is as accurate as the quadrature itself;
* the result is divided by the product of the computed total masses (each factor of
  the integrand is linear in one density), so normalising-constant and tail errors cancel.

Point masses (an arm with a prior and ``n_aux = inf`` draws exactly ``mu``): only the
largest point value ``v`` can win among them (exact ties split uniformly, as the decision
kernel breaks them), it wins with ``prod F_j(v)`` over the continuous arms, and a
continuous arm only wins above ``v``.

Accuracy (tests/kernels/test_allocation.py, against SciPy's adaptive ``quad`` with
``betainc`` at 1e-13): absolute error per arm at most :data:`TS_ALLOCATION_ERROR` for
Beta parameters a, b >= 1, from (1, 1) to 1e9 pseudo-counts and K up to 16. With a
prior below 1 pseudo-count (``ts_alpha0`` or ``ts_beta0`` < 1, no data yet) the density is
unbounded at 0 or 1 and the bound is not guaranteed.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from lola.kernels.numba_config import NJIT
from lola.kernels.policies import ts_beta_params

GL_NODES = 8
PANELS_PER_ARM = 6
#: Geometrically graded panels (ratio GRADE_RATIO) toward a clipped end 0 or 1.
GRADED = 24          # levels where a (or b) < 1: the density is unbounded there
GRADED_SMOOTH = 8    # levels for 1 < a < SMOOTH_POWER, not whole: bounded, not smooth
GRADE_RATIO = 0.2
#: Above this Beta parameter x^(a-1) is smooth enough at 0 (and (1-x)^(b-1) at 1) for plain panels.
SMOOTH_POWER = 6.0
#: Break points of overlapping arms closer than MERGE x the finest covering step are dropped.
MERGE = 0.6
#: Below this largest Beta parameter log x and log(1 - x) are shared by all arms (relative
#: error of a density ~ 1e5 x 1e-16); above it each arm uses log1p offsets from its mean.
SHARED_LOG_MAX = 1e5
#: Stated (and tested) bound on the absolute error of each TS allocation probability.
TS_ALLOCATION_ERROR = 1e-6


def _gauss_legendre_tables(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes t, weights w on [-1, 1] and the integration matrix S with
    ``S @ f(t) ~ [integral_{-1}^{t_g} f]_g`` (exact for polynomials of degree < n)."""
    t, w = np.polynomial.legendre.leggauss(n)
    V = np.polynomial.legendre.legvander(t, n - 1)  # V[g, i] = P_i(t_g)
    Q = np.empty((n, n))
    for i in range(n):
        c = np.zeros(n + 1)
        c[i] = 1.0
        integ = np.polynomial.legendre.legint(c, lbnd=-1.0)  # antiderivative of P_i, zero at -1
        Q[:, i] = np.polynomial.legendre.legval(t, integ)
    return t, w, np.ascontiguousarray(Q @ np.linalg.inv(V))


GL_T, GL_W, GL_S = _gauss_legendre_tables(GL_NODES)


@numba.njit(**NJIT)
def ts_allocation(K, a, b, point, active, gl_t, gl_w, gl_s, out):
    """P(arm k's draw is the largest) for k < K into ``out`` (0 for inactive arms).

    ``a[k], b[k]``: Beta parameters; ``point[k]``: the value of a point-mass arm (used where
    ``a[k] < 0``). Exact ties between point masses split uniformly. See the module docstring.
    """
    best_moments(K, a, b, point, active, gl_t, gl_w, gl_s, out, np.empty(K))


@numba.njit(**NJIT)
def best_moments(K, a, b, point, active, gl_t, gl_w, gl_s, out, outx):
    """:func:`ts_allocation` into ``out``, and ``outx[k] = E[theta_k; k is the argmax]`` on the
    same panels (so ``sum(outx) = E[max_k theta_k]``, the expected-loss term of lola.stream.stats)."""
    G = gl_t.shape[0]
    P = PANELS_PER_ARM
    lo = np.empty(K)
    hi = np.empty(K)
    lnorm = np.empty(K)
    scale = np.empty(K)  # ~ 1 / (sd sqrt(2 pi)): the computed masses stay near 1 (no underflow of their product)
    brk = np.empty(K * (P + 1) + 2 * GRADED + 1)
    reg = np.empty(K * (P + 1))  # each arm's equal panels, thinned below where arms overlap
    arm_step = np.empty(K)
    nr = 0
    nb = 0
    amax = 0.0
    base0 = base1 = np.inf
    lev0 = lev1 = 0
    vmax = -np.inf
    n_cont = 0
    for k in range(K):
        out[k] = 0.0
        outx[k] = 0.0
        if not active[k]:
            continue
        if a[k] < 0.0:
            vmax = max(vmax, point[k])
            continue
        n_cont += 1
        ak = a[k]
        bk = b[k]
        s = ak + bk
        m = ak / s
        sd = math.sqrt(m * (1.0 - m) / (s + 1.0))  # = sqrt(ab / (s^2 (s + 1))), no underflow
        wdt = 10.0 + 24.0 / math.sqrt(min(ak, bk))
        lo[k] = max(0.0, m - wdt * sd)
        hi[k] = min(1.0, m + wdt * sd)
        scale[k] = 1.0 / max(sd * 2.5066282746310002, 1e-300)
        lnorm[k] = min(max(m, 1e-300), 1.0 - 1.1102230246251565e-16)  # centre of the log density
        step = (hi[k] - lo[k]) / P
        arm_step[k] = step
        amax = max(amax, ak, bk)
        for p in range(P + 1):
            reg[nr] = lo[k] + p * step
            nr += 1
        # x^(a-1) (1-x)^(b-1) is not smooth at a clipped end unless a-1 (b-1) is a whole number:
        # one geometrically graded set of panels per end, as fine as the finest arm needing it
        if lo[k] == 0.0 and ak < SMOOTH_POWER and ak != math.floor(ak):
            base0 = min(base0, step)
            lev0 = max(lev0, GRADED if ak < 1.0 else GRADED_SMOOTH)
        if hi[k] == 1.0 and bk < SMOOTH_POWER and bk != math.floor(bk):
            base1 = min(base1, step)
            lev1 = max(lev1, GRADED if bk < 1.0 else GRADED_SMOOTH)
    for p in range(1, lev0 + 1):
        brk[nb] = base0 * GRADE_RATIO ** p
        nb += 1
    for p in range(1, lev1 + 1):
        if base1 * GRADE_RATIO ** p < 1e-14:
            break  # 1 - x would no longer be resolved in double precision
        brk[nb] = 1.0 - base1 * GRADE_RATIO ** p
        nb += 1
    has_point = vmax > -np.inf
    if has_point:
        brk[nb] = vmax
        nb += 1
    if nr > 0:
        # Thin the union of the arms' break points: keep one only if it is at least MERGE x the
        # finest step of the arms covering it away from the last kept one, so overlapping arms
        # share panels (every panel stays narrower than (1 + MERGE) x each covering arm's step).
        rs = np.sort(reg[:nr])
        last = rs[0]
        brk[nb] = last
        nb += 1
        for i in range(1, nr):
            x = rs[i]
            req = np.inf
            for k in range(K):
                if active[k] and a[k] >= 0.0 and lo[k] <= x <= hi[k]:
                    req = min(req, arm_step[k])
            if x - last >= MERGE * req or i == nr - 1:
                brk[nb] = x
                nb += 1
                last = x
    shared_logs = amax < SHARED_LOG_MAX
    if n_cont > 0:
        br = np.sort(brk[:nb])
        fprev = np.zeros(K)
        fpt = np.ones(K)  # CDF of each continuous arm at vmax
        pdf = np.empty((K, G))
        cdf = np.empty((K, G))
        xs = np.empty(G)
        lx = np.empty(G)
        l1x = np.empty(G)
        cst = np.empty(K)
        for k in range(K):
            if active[k] and a[k] >= 0.0:
                cst[k] = (a[k] - 1.0) * math.log(lnorm[k]) + (b[k] - 1.0) * math.log1p(-lnorm[k])
        for i in range(nb - 1):
            left = br[i]
            right = br[i + 1]
            h = right - left
            if has_point and left == vmax:
                for k in range(K):
                    if active[k] and a[k] >= 0.0:
                        fpt[k] = fprev[k]
            if h <= 0.0:
                continue
            half = 0.5 * h
            for g in range(G):
                x = left + half * (gl_t[g] + 1.0)
                xs[g] = x
                if shared_logs and 0.0 < x < 1.0:
                    lx[g] = math.log(x)
                    l1x[g] = math.log1p(-x)
            for k in range(K):
                if not active[k] or a[k] < 0.0 or right <= lo[k] or left >= hi[k]:
                    for g in range(G):
                        pdf[k, g] = 0.0
                        cdf[k, g] = fprev[k]
                    continue
                am1 = a[k] - 1.0
                bm1 = b[k] - 1.0
                c0 = lnorm[k]
                inv_scale = scale[k]
                if shared_logs:  # counts below SHARED_LOG_MAX: two logs per node shared by all arms
                    ck = cst[k]
                    for g in range(G):
                        pdf[k, g] = (math.exp(am1 * lx[g] + bm1 * l1x[g] - ck) * inv_scale
                                     if 0.0 < xs[g] < 1.0 else 0.0)
                else:
                    for g in range(G):
                        # density up to a constant (the masses are normalised below), centred at the
                        # mean so that a, b up to 1e12 lose no digits: log1p of the relative offset
                        dx = xs[g] - c0
                        ex = 0.0
                        if am1 != 0.0:  # log(x / c0); log1p near c0, plain logs far from it
                            ex += am1 * (math.log1p(dx / c0) if xs[g] > 0.5 * c0 else math.log(xs[g]) - math.log(c0))
                        if bm1 != 0.0:  # log((1 - x) / (1 - c0)) likewise
                            ex += bm1 * (math.log1p(-dx / (1.0 - c0)) if 1.0 - xs[g] > 0.5 * (1.0 - c0)
                                         else math.log1p(-xs[g]) - math.log1p(-c0))
                        pdf[k, g] = math.exp(ex) * inv_scale if 0.0 < xs[g] < 1.0 else 0.0
                tot = 0.0
                for g in range(G):
                    acc = 0.0
                    for q in range(G):
                        acc += gl_s[g, q] * pdf[k, q]
                    cdf[k, g] = fprev[k] + half * acc
                    tot += gl_w[g] * pdf[k, g]
                fprev[k] += half * tot
            if has_point and right <= vmax:
                continue  # below the largest point mass no continuous arm wins
            for k in range(K):
                if not active[k] or a[k] < 0.0 or right <= lo[k] or left >= hi[k]:
                    continue
                acc = 0.0
                accx = 0.0
                for g in range(G):
                    prod = gl_w[g] * pdf[k, g]
                    for j in range(K):
                        if j != k and active[j] and a[j] >= 0.0:
                            prod *= cdf[j, g]
                    acc += prod
                    accx += prod * xs[g]
                out[k] += half * acc
                outx[k] += half * accx
        if has_point and br[nb - 1] == vmax:
            for k in range(K):
                if active[k] and a[k] >= 0.0:
                    fpt[k] = fprev[k]
        # normalise by the computed masses: each continuous factor is linear in its density
        z = 1.0
        zpt = 1.0
        for k in range(K):
            if active[k] and a[k] >= 0.0:
                zk = fprev[k] if fprev[k] > 1e-250 else 1.0
                z *= zk
                zpt *= min(fpt[k] / zk, 1.0)
        z = max(z, 1e-300)
        for k in range(K):
            if active[k] and a[k] >= 0.0:
                out[k] /= z
                outx[k] /= z
    else:
        zpt = 1.0
    if has_point:
        nt = 0
        for k in range(K):
            if active[k] and a[k] < 0.0 and point[k] == vmax:
                nt += 1
        for k in range(K):
            if active[k] and a[k] < 0.0 and point[k] == vmax:
                out[k] = zpt / nt
                outx[k] = vmax * out[k]
    # renormalise: the sum differs from 1 by the quadrature error only
    total = 0.0
    for k in range(K):
        total += out[k]
    if not (0.0 < total < np.inf):
        # outside the stated range (a density unbounded at 0 or 1 with extreme parameters):
        # never NaN; equal shares over the active arms, the caller's propensity stays a probability
        n_act = 0
        for k in range(K):
            n_act += 1 if active[k] else 0
        for k in range(K):
            out[k] = 1.0 / n_act if active[k] and n_act > 0 else 0.0
            outx[k] = np.nan  # no moment outside the stated range
        return
    for k in range(K):  # 0 < total < inf here
        out[k] /= total
        outx[k] /= total


@numba.njit(**NJIT)
def ts_row_allocation(K, n_aux, a0, b0, lam, imp_row, clk_row, conv_row, mu_row, prior_row, active_row, out):
    """:func:`ts_allocation` of one experiment's arms from its statistics (one row of the state)."""
    a = np.empty(K)
    b = np.empty(K)
    for k in range(K):
        a[k], b[k] = ts_beta_params(imp_row[k], clk_row[k] + lam * conv_row[k], mu_row[k], prior_row[k], n_aux,
                                    a0, b0)
    ts_allocation(K, a, b, mu_row, active_row, GL_T, GL_W, GL_S, out)
