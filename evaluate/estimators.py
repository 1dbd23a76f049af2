"""Off-policy estimators over logged bandit feedback, each with a bootstrap interval.

Inputs, for n logged rounds over K actions: ``action[i]`` (the logged action), ``reward[i]``,
``pscore[i]`` (the logging policy's probability of that action: the decision's
``propensity``), ``pi[i, k]`` (the target policy's probability of action k in round i) and,
for DR, ``q[i, k]`` (the reward model's estimate; here the LLM prior: a variant never
shown still gets a term). With ``w[i] = pi[i, action[i]] / pscore[i]``:

* IPS: mean(w r); SNIPS: sum(w r) / sum(w);
* DR: mean(sum_k pi q + w (r - q[action]));
* switch-DR (Wang, Agarwal, Dudik 2017): DR with the correction only where ``w <= tau``.

The formulas are Open Bandit Pipeline's (``obp.ope``: InverseProbabilityWeighting,
SelfNormalizedInverseProbabilityWeighting, DoublyRobust, SwitchDoublyRobust); the tests
compare with obp itself to 1e-9 when its environment exists (``make obp-env``).

Interval: a nonparametric bootstrap over rounds (B resamples with replacement, the whole
estimator recomputed on each, SNIPS's normaliser included). Every estimator is a ratio
sum(num) / sum(den) (den = 1 for all but SNIPS), whose influence values are
``psi_i = (num_i - v den_i) / mean(den)`` and delta-method standard error
``se = sd(psi) / sqrt(n)``. The default interval is the **studentised bootstrap**
(bootstrap-t; Efron and Tibshirani 1993, ch. 12; Hall 1992): each resample gives
``t* = (v* - v) / se*`` with its own ``se*``, and the interval is ``[v - t*_(1-a/2) se,
v - t*_(a/2) se]``. Why not the percentile interval (``interval="percentile"``, obp's): the
importance-weighted terms are heavy-tailed (a rarely shown variant carries weight up to
1 / min_traffic), so when few of those rounds clicked the estimate is low *and* its spread
looks small; the percentile interval ignores that dependence of spread on level, the
studentised one is second-order accurate for smooth functions of means and carries it. At
large n the two agree (docs/evaluation.md: coverage of both, ``lola bench ope``).

Rounds of one experiment are not independent under an adaptive logging policy; with the
logged propensities the weighted terms minus the policy's value are martingale differences,
whose sum has the variance the round bootstrap estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lola.errors import LolaError

ESTIMATORS = ("ips", "snips", "dr", "switch_dr")
#: switch-DR's default weight threshold: above it the round keeps the reward model's term only.
SWITCH_TAU = 20.0
#: Bootstrap intervals: studentised (bootstrap-t, the default) or percentile (module docstring).
INTERVALS = ("studentized", "percentile")


@dataclass(frozen=True)
class Feedback:
    """Logged bandit feedback (module docstring); ``q`` may be None (then no DR estimates)."""

    action: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    pi: np.ndarray
    q: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.action.shape[0]
        if n == 0:
            raise LolaError("no logged rounds to evaluate")
        if self.reward.shape != (n,) or self.pscore.shape != (n,) or self.pi.ndim != 2 or self.pi.shape[0] != n:
            raise LolaError("logged feedback: action, reward, pscore need shape [n] and pi [n, K]")
        if self.q is not None and self.q.shape != self.pi.shape:
            raise LolaError("logged feedback: q needs the shape of pi [n, K]")
        if not (self.pscore > 0).all():
            raise LolaError("logged feedback: every propensity must be > 0 (a deterministic logging policy "
                            "cannot be evaluated off-policy; give it a min_traffic floor)")

    @property
    def weights(self) -> np.ndarray:
        return self.pi[np.arange(self.action.shape[0]), self.action] / self.pscore


def round_values(fb: Feedback, name: str, tau: float = SWITCH_TAU) -> tuple[np.ndarray, np.ndarray]:
    """Per-round numerators and denominators: the estimate is sum(num) / sum(den)."""
    w = fb.weights
    n = fb.action.shape[0]
    if name == "ips":
        return w * fb.reward, np.ones(n)
    if name == "snips":
        return w * fb.reward, w
    if fb.q is None:
        raise LolaError(f"{name} needs a reward model (q)")
    dm = (fb.pi * fb.q).sum(axis=1)
    resid = fb.reward - fb.q[np.arange(n), fb.action]
    if name == "dr":
        return dm + w * resid, np.ones(n)
    if name == "switch_dr":
        return dm + (w <= tau) * w * resid, np.ones(n)
    raise LolaError(f"unknown estimator {name!r}; one of {', '.join(ESTIMATORS)}")


def delta_se(num: np.ndarray, den: np.ndarray) -> float:
    """Delta-method (influence-function) standard error of sum(num) / sum(den) over n rounds."""
    n = num.shape[0]
    value = num.sum() / den.sum()
    psi = (num - value * den) / den.mean()
    return float(psi.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0


def _resample_sums(num: np.ndarray, den: np.ndarray, bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """Sums over B resamples of rounds (with replacement): columns num, den, num^2, num den, den^2."""
    n = num.shape[0]
    cols = np.stack([num, den, num * num, num * den, den * den], axis=1)
    out = np.empty((bootstrap, 5))
    chunk = max(1, 4_000_000 // n)  # bounds the [chunk, n] index array to ~32 MB
    for start in range(0, bootstrap, chunk):
        stop = min(start + chunk, bootstrap)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = np.stack([cols[:, j][idx].sum(axis=1) for j in range(5)], axis=1)
    return out


def estimate(fb: Feedback, name: str, bootstrap: int, rng: np.random.Generator, level: float = 0.95,
             tau: float = SWITCH_TAU, interval: str = "studentized") -> dict:
    """``{"value": v, "ci": [lo, hi]}`` for one estimator (``ci`` null for ``bootstrap = 0``).

    ``interval``: ``studentized`` (bootstrap-t, the default) or ``percentile`` (module docstring).
    """
    if interval not in INTERVALS:
        raise LolaError(f"unknown interval {interval!r}; one of {', '.join(INTERVALS)}")
    num, den = round_values(fb, name, tau)
    value = float(num.sum() / den.sum())
    if bootstrap <= 0:
        return {"value": value, "ci": None}
    n = num.shape[0]
    s = _resample_sums(num, den, bootstrap, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        boots = s[:, 0] / np.where(s[:, 1] > 0, s[:, 1], np.nan)
    tail = (1 - level) / 2
    if interval == "percentile":
        lo, hi = np.nanquantile(boots, [tail, 1 - tail])
        return {"value": value, "ci": [float(lo), float(hi)]}
    se = delta_se(num, den)
    if not se > 0:  # every round's term equal: no sampling spread to estimate
        return {"value": value, "ci": [value, value]}
    # se* of each resample from its sums: sum (num - v* den)^2 / (n - 1) / mean(den*)^2 / n
    ss = s[:, 2] - 2 * boots * s[:, 3] + boots ** 2 * s[:, 4]
    se_star = np.sqrt(np.maximum(ss, 0.0) / (n - 1) / n) / (s[:, 1] / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        # a resample without spread: t* is +-inf (conservative), or undefined if it hit v exactly
        t = np.where(se_star > 0, (boots - value) / se_star, np.sign(boots - value) * np.inf)
    t = t[np.isfinite(boots) & ~((se_star <= 0) & (boots == value))]
    t_lo, t_hi = np.quantile(t, [tail, 1 - tail])
    return {"value": value, "ci": [float(value - t_hi * se), float(value - t_lo * se)]}


def evaluate(fb: Feedback, bootstrap: int, seed: int = 0, tau: float = SWITCH_TAU,
             interval: str = "studentized") -> dict:
    """Every estimator the feedback supports (DR ones only with ``q``), one seeded generator."""
    rng = np.random.default_rng(seed)
    names = ESTIMATORS if fb.q is not None else ("ips", "snips")
    return {name: estimate(fb, name, bootstrap, rng, tau=tau, interval=interval) for name in names}
