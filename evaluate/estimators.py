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
estimator recomputed on each, SNIPS's normaliser included; percentile interval). Rounds of
one experiment are not independent under an adaptive logging policy; the bootstrap treats
them as if they were (docs/evaluation.md, coverage measured by ``lola bench ope``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lola.errors import LolaError

ESTIMATORS = ("ips", "snips", "dr", "switch_dr")
#: switch-DR's default weight threshold: above it the round keeps the reward model's term only.
SWITCH_TAU = 20.0


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


def estimate(fb: Feedback, name: str, bootstrap: int, rng: np.random.Generator, level: float = 0.95,
             tau: float = SWITCH_TAU) -> dict:
    """``{"value": v, "ci": [lo, hi]}`` for one estimator (``ci`` null for ``bootstrap = 0``)."""
    num, den = round_values(fb, name, tau)
    value = float(num.sum() / den.sum())
    if bootstrap <= 0:
        return {"value": value, "ci": None}
    n = num.shape[0]
    idx = rng.integers(0, n, size=(bootstrap, n))
    dens = den[idx].sum(axis=1)
    boots = num[idx].sum(axis=1) / np.where(dens > 0, dens, np.nan)
    tail = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(boots, [tail, 100 - tail])
    return {"value": value, "ci": [float(lo), float(hi)]}


def evaluate(fb: Feedback, bootstrap: int, seed: int = 0, tau: float = SWITCH_TAU) -> dict:
    """Every estimator the feedback supports (DR ones only with ``q``), one seeded generator."""
    rng = np.random.default_rng(seed)
    names = ESTIMATORS if fb.q is not None else ("ips", "snips")
    return {name: estimate(fb, name, bootstrap, rng, tau=tau) for name in names}
