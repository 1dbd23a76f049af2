"""lola.evaluate.heldout: DR with the prior for a never-shown variant, and the conformal widening."""

from __future__ import annotations

import numpy as np
import pytest

from lola.data.upworthy import HeadlineTest
from lola.errors import LolaError
from lola.evaluate.heldout import residual_quantiles, study


def synthetic_tests(seed: int, n_tests: int, prefix: str):
    """Tests with archive CTRs and a prior off by a log-normal factor (sd 0.5)."""
    rng = np.random.default_rng(seed)
    tests, priors = [], {}
    for t in range(n_tests):
        ctrs = rng.uniform(0.005, 0.03, 4)
        heads = tuple(f"{prefix}{t}-{k}" for k in range(4))
        imps = np.full(4, 1e6)
        tests.append(HeadlineTest(f"{prefix}{t}", "e", heads, imps, ctrs * imps))
        priors.update({h: float(c * np.exp(rng.normal(0, 0.5))) for h, c in zip(heads, ctrs)})
    return tests, priors


def test_naive_interval_misses_and_the_widened_one_covers():
    cal, p1 = synthetic_tests(0, 100, "c")
    ev, p2 = synthetic_tests(1, 60, "t")
    out = study(cal, ev, {**p1, **p2}, rounds=50, resamples=50, seed=0)
    assert out["held_out_headlines"] == 240
    assert out["coverage_dr_bootstrap"] == 0.0  # DR is the prior exactly; its interval has no width
    assert 0.9 <= out["coverage_widened"] <= 0.99
    lo, hi = out["log_ratio_quantiles"]
    assert lo == pytest.approx(-1.96 * 0.5, abs=0.2) and hi == pytest.approx(1.96 * 0.5, abs=0.2)


def test_too_few_calibration_headlines_is_an_error():
    cal, p = synthetic_tests(0, 3, "c")
    with pytest.raises(LolaError, match="calibration"):
        residual_quantiles(cal, p, 0.95)
