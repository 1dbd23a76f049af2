"""Slow, obviously-correct NumPy/Python twins of every kernel.

Written from the paper's formulas, not from the kernels: Algorithm 1 with its square
roots and divisions as printed, Algorithm 3's Beta posteriors, Algorithm 4 with A kept
explicitly and solved afresh at every step, Algorithm 2's intervals. The random stream
(SplitMix64 counters) is re-implemented with Python integers so decisions can be
compared one by one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lola.kernels.adaptive import adaptive_n_aux
from lola.kernels.params import ExperimentParams

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix64(z: int) -> int:
    z &= MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def uniform(key: int, j: int) -> float:
    z = mix64(key + (j + 1) * GOLDEN)
    return ((z >> 11) + 0.5) * 2.0**-53


def decision_keys(seed: int, n: int) -> list[int]:
    return [mix64(seed + (i + 1) * GOLDEN) for i in range(n)]


def _zig_tables():
    kn, wn, fn = [0] * 128, [0.0] * 128, [0.0] * 128
    m1, dn, vn = 2147483648.0, 3.442619855899, 9.91256303526217e-3
    tn = dn
    q = vn / math.exp(-0.5 * dn * dn)
    kn[0], kn[1] = int((dn / q) * m1), 0
    wn[0], wn[127] = q / m1, dn / m1
    fn[0], fn[127] = 1.0, math.exp(-0.5 * dn * dn)
    for i in range(126, 0, -1):
        dn = math.sqrt(-2.0 * math.log(vn / dn + math.exp(-0.5 * dn * dn)))
        kn[i + 1] = int((dn / tn) * m1)
        tn = dn
        fn[i] = math.exp(-0.5 * dn * dn)
        wn[i] = dn / m1
    return kn, wn, fn


KN, WN, FN = _zig_tables()
R = 3.442620


def signed32(key: int, j: int) -> int:
    z = mix64(key + (j + 1) * GOLDEN) & 0xFFFFFFFF
    return z - (1 << 32) if z >= (1 << 31) else z


def normal_from(hz: int, key: int, j: int) -> tuple[float, int]:
    """Marsaglia-Tsang ziggurat, as in their 2000 paper (RNOR / nfix)."""
    iz = hz & 127
    while True:
        if abs(hz) < KN[iz]:
            return hz * WN[iz], j
        x = hz * WN[iz]
        if iz == 0:
            while True:
                x = -math.log(uniform(key, j)) / R
                y = -math.log(uniform(key, j + 1))
                j += 2
                if y + y >= x * x:
                    return (R + x if hz > 0 else -R - x), j
        u = uniform(key, j)
        j += 1
        if FN[iz] + u * (FN[iz - 1] - FN[iz]) < math.exp(-0.5 * x * x):
            return x, j
        hz = signed32(key, j)
        j += 1
        iz = hz & 127


def normal_draw(key: int, j: int) -> tuple[float, int]:
    return normal_from(signed32(key, j), key, j + 1)


def gamma_draw(shape: float, key: int, j: int) -> tuple[float, int]:
    boost = 1.0
    if shape < 1.0:
        boost = uniform(key, j) ** (1.0 / shape)
        j += 1
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        z = mix64(key + (j + 1) * GOLDEN)
        j += 1
        lo = z & 0xFFFFFFFF
        x, j = normal_from(lo - (1 << 32) if lo >= (1 << 31) else lo, key, j)
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v**3
        u = ((z >> 32) + 0.5) / 2.0**32
        if u < 1.0 - 0.0331 * x**4 or math.log(u) < 0.5 * x * x + d * (1.0 - v + math.log(v)):
            return d * v * boost, j


def beta_draw(a: float, b: float, key: int, j: int) -> tuple[float, int]:
    ga, j = gamma_draw(a, key, j)
    gb, j = gamma_draw(b, key, j)
    return ga / (ga + gb), j


def ts_allocation_reference(a: list, b: list, point: list, active: list) -> list[float]:
    """P(arm k's Beta draw is the largest) by SciPy's adaptive quad over betainc, tolerance 1e-13.

    The reference for the kernel's quadrature: integral of f_k prod_{j != k} F_j over (v, 1),
    v the largest point mass (a = -1); point masses tied at v share prod F_j(v).
    """
    from scipy import integrate, special, stats

    K = len(a)
    cont = [k for k in range(K) if active[k] and a[k] >= 0]
    pts = [point[k] for k in range(K) if active[k] and a[k] < 0]
    vmax = max(pts) if pts else 0.0
    out = [0.0] * K
    for k in cont:
        def f(x, k=k):
            return stats.beta.pdf(x, a[k], b[k]) * math.prod(special.betainc(a[j], b[j], x) for j in cont if j != k)
        m = a[k] / (a[k] + b[k])
        sd = math.sqrt(a[k] * b[k] / ((a[k] + b[k]) ** 2 * (a[k] + b[k] + 1)))
        lo, hi = max(vmax, m - 60 * sd, 0.0), min(1.0, m + 60 * sd)
        if hi <= lo:
            continue
        inner = sorted({min(max(a[j] / (a[j] + b[j]), lo), hi) for j in cont} - {lo, hi})
        out[k] = integrate.quad(f, lo, hi, points=inner or None, epsabs=1e-14, epsrel=1e-13, limit=500)[0]
    if pts:
        tied = [k for k in range(K) if active[k] and a[k] < 0 and point[k] == vmax]
        share = math.prod(float(special.betainc(a[j], b[j], vmax)) for j in cont) / len(tied)
        for k in tied:
            out[k] = share
    total = sum(out)
    return [x / total for x in out] if total > 0 else out


@dataclass
class Arm:
    prior: float | None
    x: np.ndarray | None = None
    n: float = 0.0  # observed (discounted) impressions
    clicks: float = 0.0
    conv: float = 0.0
    active: bool = True
    candidate: bool = False


@dataclass
class Exp:
    p: ExperimentParams
    arms: list[Arm] = field(default_factory=list)
    imps: float = 0.0  # discounted impressions: t = 1 + imps
    steps: float = 0.0
    committed: list[int] | None = None
    bai_done: bool = False
    n_aux_now: float | None = None  # effective n_aux, discounted with the data when gamma < 1
    A: np.ndarray | None = None
    b: np.ndarray | None = None
    ts_ref: tuple | None = None  # TS reference posterior (a, b, point) as of its last refresh


class Twin:
    """Per-experiment Python objects; the same public behaviour as BanditState + select/update."""

    def __init__(self, d: int = 0) -> None:
        self.d = d
        self.exps: list[Exp] = []

    def add_experiment(self, p: ExperimentParams) -> int:
        e = Exp(p)
        if self.d:
            e.A = p.ridge * np.eye(self.d)
            e.b = np.zeros(self.d)
        self.exps.append(e)
        return len(self.exps) - 1

    def add_arm(self, row: int, prior=None, x=None) -> int:
        e = self.exps[row]
        e.arms.append(Arm(prior, None if x is None else np.asarray(x, float),
                          candidate=e.p.policy in ("bai", "llm_bai")))
        e.ts_ref = None
        if e.p.policy in ("bai", "llm_bai"):
            e.bai_done = False
        return len(e.arms) - 1

    def warm_start(self, row: int, X: np.ndarray, r: np.ndarray) -> None:
        e = self.exps[row]
        e.A = e.p.ridge * np.eye(self.d) + X.T @ X
        e.b = X.T @ r

    # ----------------------------------------------------------------- policy pieces
    def reward(self, e: Exp, a: Arm) -> float:
        return a.clicks + e.p.conversion_weight * a.conv

    @staticmethod
    def prior_n(e: Exp) -> float:
        return e.p.effective_n_aux if e.n_aux_now is None else e.n_aux_now

    def n_aux(self, e: Exp) -> float:
        n_aux = self.prior_n(e)
        if e.p.policy == "llm2ucb_eb":
            usable = np.array([a.active and a.prior is not None for a in e.arms])
            n_aux = adaptive_n_aux.py_func(
                n_aux, e.p.eb_strength, np.array([a.n for a in e.arms]), np.array([a.clicks for a in e.arms]),
                np.array([a.prior or 0.0 for a in e.arms]), usable)
        return n_aux

    def ucb_index(self, e: Exp) -> list[float]:
        """Algorithm 1 lines 5-7, literally."""
        t = 1.0 + e.imps
        n_aux = self.n_aux(e)
        out = []
        for a in e.arms:
            n, c = 1.0 + a.n, self.reward(e, a)
            u1 = c / n + e.p.alpha * math.sqrt(math.log(t) / n)
            if a.prior is None:
                s = u1
            elif math.isinf(n_aux):
                s = a.prior
            else:
                u2 = (c + a.prior * n_aux) / (n + n_aux) + e.p.alpha * math.sqrt(math.log(t) / (n + n_aux))
                s = min(u1, u2)
            out.append(s if a.active else -math.inf)
        return out

    def changed(self, row: int) -> None:
        """Arms, prior or settings of ``row`` changed by hand: TS takes a new reference."""
        self.exps[row].ts_ref = None

    def ts_reference(self, e: Exp, take: bool = True) -> tuple[list, list, list]:
        """The TS refresh rule as docs/kernels.md states it: keep the reference posterior
        unless there is none or an active arm's (a, b) moved by more than ts_refresh (a + b).
        ``take=False``: the posterior the next decision would use, without taking it."""
        now = self.ts_posteriors(e)
        if e.ts_ref is not None:
            ra, rb, _ = e.ts_ref
            th = e.p.ts_refresh
            moved = any(
                arm.active and ((now[0][k] < 0) != (ra[k] < 0) or (now[0][k] >= 0 and abs(now[0][k] - ra[k])
                                                                   + abs(now[1][k] - rb[k]) > th * (ra[k] + rb[k])))
                for k, arm in enumerate(e.arms))
            if not moved:
                return e.ts_ref
        if take:
            e.ts_ref = now
        return now

    def ts_thetas(self, e: Exp, key: int, j: int) -> tuple[list[float], int]:
        """One draw per arm from the reference posterior (the current one when ts_refresh = 0)."""
        ra, rb, pt = self.ts_reference(e)
        out = []
        for k, a in enumerate(e.arms):
            if not a.active:
                out.append(-math.inf)
            elif ra[k] < 0:
                out.append(pt[k])
            else:
                th, j = beta_draw(ra[k], rb[k], key, j)
                out.append(th)
        return out, j

    def linucb_index(self, e: Exp) -> list[float]:
        theta = np.linalg.solve(e.A, e.b)
        out = []
        for a in e.arms:
            s = theta @ a.x + e.p.linucb_alpha * math.sqrt(max(a.x @ np.linalg.solve(e.A, a.x), 0.0))
            out.append(s if a.active else -math.inf)
        return out

    def bai_interval(self, e: Exp, a: Arm) -> tuple[float, float]:
        n_aux = self.prior_n(e)
        if a.prior is not None and math.isinf(n_aux):
            return a.prior, 0.0
        prior = n_aux if a.prior is not None else 0.0
        T = prior + a.n
        if T <= 0:
            return 0.0, math.inf
        mean = ((a.prior or 0.0) * prior + self.reward(e, a)) / T
        L = math.log(4 * len(e.arms) * T * T / e.p.bai_delta)
        if e.p.bai_radius == "hoeffding":
            return mean, math.sqrt(L / (2 * T))
        if T <= 1:
            return mean, math.inf
        sample_var = max(mean * (1 - mean), 0.0) * T / (T - 1)  # Bernoulli draws with mean `mean`
        return mean, math.sqrt(2 * sample_var * L / T) + 7 * L / (3 * (T - 1))

    def index(self, e: Exp, key: int) -> tuple[list[float], bool, int]:
        pol = e.p.policy
        if pol in ("llm2ucb", "ucb", "pure_llm", "llm2ucb_eb"):
            return self.ucb_index(e), False, 2
        if pol in ("ts", "llm_ts"):
            th, j = self.ts_thetas(e, key, 2)
            return th, True, j
        if pol in ("linucb", "llm_linucb"):
            return self.linucb_index(e), False, 2
        if pol == "ec":
            lam = e.p.conversion_weight
            explore = e.steps < math.ceil(e.p.explore_fraction * e.p.horizon)
            committed = [k for k in (e.committed or []) if e.arms[k].active]
            out = []
            for k, a in enumerate(e.arms):
                if not a.active:
                    out.append(-math.inf)
                elif explore:
                    out.append(-a.n)
                elif committed:
                    out.append(0.0 if k in committed else -math.inf)
                else:
                    out.append((a.clicks + lam * a.conv) / max(a.n, 1.0))
            return out, False, 2
        out = []
        any_cand = any(a.active and a.candidate for a in e.arms)  # none left: every active arm competes
        for a in e.arms:
            if not (a.active and (a.candidate or not any_cand)):
                out.append(-math.inf)
            elif e.bai_done:
                out.append(self.bai_interval(e, a)[0])
            else:
                out.append(-a.n)
        return out, False, 2

    @staticmethod
    def tied(scores: list[float]) -> list[int]:
        best = max(scores)
        return [] if best == -math.inf else [k for k, s in enumerate(scores) if s == best]

    # ----------------------------------------------------------------- public behaviour
    def decide(self, row: int, key: int, u=None) -> tuple[int, float]:
        e = self.exps[row]
        u0, u1 = (uniform(key, 0), uniform(key, 1)) if u is None else u
        act = [k for k, a in enumerate(e.arms) if a.active]
        if not act:
            return -1, 0.0
        if e.steps < e.p.burn_in:
            return act[min(int(u1 * len(act)), len(act) - 1)], 1.0 / len(act)
        scores, stochastic, j = self.index(e, key)
        ties = self.tied(scores)
        pol = ties[min(int(u1 * len(ties)), len(ties) - 1)]
        slot = pol
        floor = mass = 0.0
        if e.p.min_traffic > 0:
            floor = min(e.p.min_traffic, 1.0 / len(act))
            mass = floor * len(act)
            if u0 < mass:
                slot = act[min(int(u0 / mass * len(act)), len(act) - 1)]
        if not stochastic:
            p = 1.0 / len(ties) if slot in ties else 0.0
        else:
            p = self.ts_allocation(e)[slot]
        return slot, floor + (1 - mass) * p

    def ts_posteriors(self, e: Exp) -> tuple[list, list, list]:
        """Per arm (a, b) of its Beta posterior, or a = -1 and ``point`` for a point mass."""
        n_aux = self.prior_n(e)
        a_, b_, pt = [], [], []
        for a in e.arms:
            c = self.reward(e, a)
            if a.prior is not None and math.isinf(n_aux):
                a_.append(-1.0); b_.append(0.0); pt.append(a.prior)
                continue
            pa, pb = e.p.ts_alpha0 + c, e.p.ts_beta0 + max(a.n - c, 0.0)
            if a.prior is not None:
                pa += n_aux * a.prior
                pb += n_aux * (1.0 - a.prior)
            a_.append(pa); b_.append(pb); pt.append(0.0)
        return a_, b_, pt

    def ts_allocation(self, e: Exp, take: bool = True) -> list[float]:
        """P(each arm's draw from the reference posterior is the largest), SciPy quadrature."""
        return ts_allocation_reference(*self.ts_reference(e, take), [a.active for a in e.arms])

    def allocation(self, row: int) -> list[float]:
        """P(next decision picks each arm): burn-in, floor, ties, TS by SciPy quadrature."""
        e = self.exps[row]
        act = [a.active for a in e.arms]
        n_act = sum(act)
        if not n_act:
            return [0.0] * len(e.arms)
        if e.steps < e.p.burn_in:
            return [1.0 / n_act if x else 0.0 for x in act]
        if e.p.policy in ("ts", "llm_ts"):
            p = self.ts_allocation(e, take=False)  # looking does not move the reference
        else:
            scores, _, _ = self.index(e, 0)
            ties = self.tied(scores)
            p = [1.0 / len(ties) if k in ties else 0.0 for k in range(len(e.arms))]
        floor = min(e.p.min_traffic, 1.0 / n_act) if e.p.min_traffic > 0 else 0.0
        return [floor + (1 - floor * n_act) * q if x else 0.0 for q, x in zip(p, act)]

    def select(self, rows, keys, uniforms=None):
        out = [self.decide(int(r), int(k), None if uniforms is None else tuple(uniforms[i]))
               for i, (r, k) in enumerate(zip(rows, keys))]
        return np.array([o[0] for o in out]), np.array([o[1] for o in out])

    def update_one(self, row: int, slot: int, w: float, c: float, v: float) -> None:
        e = self.exps[row]
        g = e.p.gamma
        if w > 0 and g < 1:
            f = g**w
            for a in e.arms:
                a.n *= f
                a.clicks *= f
                a.conv *= f
            e.imps *= f
            if not math.isinf(self.prior_n(e)):
                e.n_aux_now = self.prior_n(e) * f
            if e.A is not None and e.p.policy in ("linucb", "llm_linucb"):
                # discount the data, keep the ridge; below 1e-12 the data is forgotten
                keep = 0.0 if f < 1e-12 else f
                e.A = e.A * keep + (1.0 - keep) * e.p.ridge * np.eye(self.d)
                e.b = e.b * keep
        a = e.arms[slot]
        a.n += w
        a.clicks += c
        a.conv += v
        e.imps += w
        e.steps += w
        pol = e.p.policy
        if pol in ("linucb", "llm_linucb"):
            e.A = e.A + w * np.outer(a.x, a.x)
            e.b = e.b + (c + e.p.conversion_weight * v) * a.x
        elif pol == "ec" and e.committed is None and e.steps >= math.ceil(e.p.explore_fraction * e.p.horizon):
            means = [(x.clicks + e.p.conversion_weight * x.conv) / max(x.n, 1.0) if x.active else -math.inf
                     for x in e.arms]
            best = max(means)
            e.committed = [k for k, m in enumerate(means) if m == best and e.arms[k].active]
        elif pol in ("bai", "llm_bai") and not e.bai_done:
            cands = [x for x in e.arms if x.candidate and x.active]
            iv = [self.bai_interval(e, x) for x in cands]
            max_lcb = max(m - r for m, r in iv)
            max_ucb = max(m + r for m, r in iv)
            for x, (m, r) in zip(cands, iv):
                if m + r < max_lcb - e.p.bai_epsilon:
                    x.candidate = False
            left = [(x, iv[i]) for i, x in enumerate(cands) if x.candidate]
            e.bai_done = len(left) <= 1 or all(
                m - r >= max_ucb - e.p.bai_epsilon - e.p.bai_gamma for _, (m, r) in left)

    def update(self, rows, slots, w, c, v) -> None:
        for i in range(len(rows)):
            self.update_one(int(rows[i]), int(slots[i]), float(w[i]), float(c[i]), float(v[i]))
