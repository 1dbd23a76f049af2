"""adaptive_n_aux (policy llm2ucb_eb) against a slow NumPy twin, plus its edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lola.kernels.adaptive import MAX_FACTOR, MAX_UP, adaptive_n_aux


def twin(n_aux0, strength, n, c, mu, usable):
    """Vectorised NumPy restatement of the docstring's estimator."""
    if not math.isfinite(n_aux0) or n_aux0 <= 0:
        return n_aux0
    n, c, mu, usable = map(np.asarray, (n, c, mu, usable))
    keep = usable & (n >= 1)
    n, c, mu = n[keep], c[keep], np.clip(mu[keep], 1e-6, 1 - 1e-6)
    v = mu * (1 - mu)
    r = ((c / n - mu) ** 2 - v / n) / v
    w = (n / (n + n_aux0 + 1)) ** 2
    if n.sum() >= 1:  # the pooled, experiment-level gap is one more term
        N = n.sum()
        vbar = (n * v).sum() / N
        gbar = (c.sum() - (n * mu).sum()) / N
        r = np.append(r, (gbar**2 - vbar / N) / vbar)
        w = np.append(w, (N / (N + n_aux0 + 1)) ** 2)
    den = strength + w.sum()
    if den <= 0:
        return n_aux0
    ratio = (strength / (n_aux0 + 1) + (w * r).sum()) / den
    hi, lo = n_aux0 * MAX_UP, n_aux0 / MAX_FACTOR
    if ratio <= 1 / (hi + 1):
        return hi
    return float(np.clip(1 / ratio - 1, lo, hi))


def arrays(n, c, mu, usable=None):
    n = np.asarray(n, dtype=np.float64)
    return n, np.asarray(c, dtype=np.float64), np.asarray(mu, dtype=np.float64), (
        np.ones(len(n), dtype=np.bool_) if usable is None else np.asarray(usable, dtype=np.bool_)
    )


def test_matches_twin_on_seeded_inputs():
    rng = np.random.default_rng(2024)
    for _ in range(200):
        k = int(rng.integers(1, 7))
        n = rng.integers(0, 5000, size=k).astype(float)
        mu = rng.uniform(0.002, 0.05, size=k)
        p = np.clip(mu + rng.normal(0, 0.01, size=k), 0, 1)
        c = rng.binomial(n.astype(int), p).astype(float)
        usable = rng.random(k) < 0.85
        n0 = float(rng.choice([50.0, 600.0, 1000.0, 5000.0]))
        s = float(rng.choice([0.0, 0.25, 1.0, 4.0]))
        got = adaptive_n_aux(n0, s, *arrays(n, c, mu, usable))
        assert got == pytest.approx(twin(n0, s, n, c, mu, usable), rel=1e-9)


def test_no_data_returns_n_aux0():
    n, c, mu, u = arrays([0, 0, 0], [0, 0, 0], [0.01, 0.02, 0.03])
    assert adaptive_n_aux(1000.0, 1.0, n, c, mu, u) == pytest.approx(1000.0)
    assert adaptive_n_aux(1000.0, 0.0, n, c, mu, u) == 1000.0  # zero hyperprior and no data


def test_limits_pass_through():
    n, c, mu, u = arrays([100, 100], [1, 5], [0.01, 0.02])
    assert adaptive_n_aux(math.inf, 1.0, n, c, mu, u) == math.inf  # pure LLM stays pure
    assert adaptive_n_aux(0.0, 1.0, n, c, mu, u) == 0.0  # UCB stays UCB


def test_unusable_arms_are_ignored():
    n, c, mu, _ = arrays([5000, 5000], [500, 50], [0.01, 0.01])
    only_good = adaptive_n_aux(1000.0, 0.5, n, c, mu, np.array([False, True]))
    both = adaptive_n_aux(1000.0, 0.5, n, c, mu, np.array([True, True]))
    assert only_good == pytest.approx(1000.0 * MAX_UP) and both < 100.0


def test_direction_bad_prior_weakens_exact_prior_keeps_n_aux0():
    # Observed CTR 10x the prior on lots of traffic: the prior is trusted far less.
    n, c, mu, u = arrays([20000, 20000], [2000, 3000], [0.01, 0.015])
    assert adaptive_n_aux(1000.0, 1.0, n, c, mu, u) == pytest.approx(1000.0 / MAX_FACTOR)
    # Observed exactly at the prior: the excess is negative, n_aux stays at its ceiling.
    n, c, mu, u = arrays([20000, 20000], [200, 300], [0.01, 0.015])
    assert adaptive_n_aux(1000.0, 1.0, n, c, mu, u) == pytest.approx(1000.0 * MAX_UP)


def test_a_shared_level_gap_is_caught_by_the_pooled_term():
    # Every arm 40% above its prior: arm by arm the excess is about what n_aux0
    # already allows (alone it would keep n_aux at its 1000 ceiling); pooled over
    # 6 arms the shared gap is clear, and the prior's weight drops.
    n, c, mu, u = arrays([600] * 6, [12.0] * 6, [0.014] * 6)
    assert adaptive_n_aux(1000.0, 1.0, n, c, mu, u) < 800.0


def test_stronger_hyperprior_stays_closer_to_n_aux0():
    n, c, mu, u = arrays([3000, 3000, 3000], [90, 30, 60], [0.01, 0.02, 0.015])
    vals = [adaptive_n_aux(800.0, s, n, c, mu, u) for s in (0.0, 0.5, 2.0, 32.0)]
    gaps = [abs(math.log(v / 800.0)) for v in vals]
    assert gaps == sorted(gaps, reverse=True)

