"""The LLM as DR's reward model for a variant the log never shows: does its interval cover the truth?

Protocol (``lola bench ope-heldout``), on Upworthy headline tests of the *test* split: each
headline h of a test with at least 3 headlines is held out in turn; a uniform log over the
other headlines is simulated at their archive CTRs (``rounds`` per headline, seeded), and the
fixed policy "always show h" is evaluated by DR with the prior as reward model
(:mod:`lola.evaluate.estimators`). No logged round has h, so every importance weight is 0 and
DR is exactly the prior mu_h; its bootstrap interval has zero width and covers the archive CTR
essentially never: the prior's own error is not in it.

The honest widening is split-conformal on the prior's error: on the *tune* split (never the
test split) the log-ratio residuals log(archive CTR / prior) of every headline give their
empirical (1 - level) / 2 and (1 + level) / 2 quantiles q_lo, q_hi, and the interval is
[mu_h exp(q_lo), mu_h exp(q_hi)]. Under exchangeability of tune and test headlines it covers
with probability about ``level``; the study measures it. (Multiplicative, because the prior's
error grows with the CTR's scale.)
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from lola.errors import LolaError
from lola.evaluate.estimators import Feedback, estimate


def residual_quantiles(tests: Sequence[Any], priors: dict[str, float], level: float) -> tuple[float, float, int]:
    """(q_lo, q_hi, headlines) of log(archive CTR / prior) over the tests' headlines with both positive."""
    res = [math.log(c / priors[h]) for t in tests for h, c in zip(t.headlines, t.ctrs)
           if h in priors and priors[h] > 0 and c > 0]
    if len(res) < 20:
        raise LolaError(f"only {len(res)} calibration headlines with a prior; need at least 20")
    lo, hi = np.quantile(res, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi), len(res)


def study(cal_tests: Sequence[Any], eval_tests: Sequence[Any], priors: dict[str, float], rounds: int,
          resamples: int, seed: int, level: float = 0.95) -> dict[str, Any]:
    """Coverage of the naive DR interval and of the conformally widened one (module docstring)."""
    q_lo, q_hi, n_cal = residual_quantiles(cal_tests, priors, level)
    rng = np.random.default_rng(seed)
    naive, widened, widths, errors = [], [], [], []
    for test in eval_tests:
        k = test.n_arms
        if k < 3 or any(h not in priors for h in test.headlines):
            continue
        mu = np.array([priors[h] for h in test.headlines])
        for h in range(k):
            shown = [j for j in range(k) if j != h]
            n = rounds * len(shown)
            action = rng.choice(shown, size=n)
            reward = (rng.random(n) < test.ctrs[action]).astype(float)
            pi = np.zeros((n, k))
            pi[:, h] = 1.0
            fb = Feedback(action, reward, np.full(n, 1.0 / len(shown)), pi, np.tile(mu, (n, 1)))
            est = estimate(fb, "dr", resamples, rng, level)
            truth = float(test.ctrs[h])
            naive.append(est["ci"][0] <= truth <= est["ci"][1])
            lo, hi = est["value"] * math.exp(q_lo), est["value"] * math.exp(q_hi)
            widened.append(lo <= truth <= hi)
            widths.append(hi - lo)
            errors.append(est["value"] - truth)
    if not naive:
        raise LolaError("no test-split test with >= 3 headlines, all with priors")
    return {"held_out_headlines": len(naive), "calibration_headlines": n_cal, "level": level,
            "rounds_per_shown_headline": rounds, "log_ratio_quantiles": [q_lo, q_hi],
            "coverage_dr_bootstrap": float(np.mean(naive)), "coverage_widened": float(np.mean(widened)),
            "mean_width_widened": float(np.mean(widths)), "mean_abs_error_dr": float(np.mean(np.abs(errors))),
            "mean_error_dr": float(np.mean(errors))}
