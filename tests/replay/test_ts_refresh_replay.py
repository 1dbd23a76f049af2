"""``lola replay ts-refresh`` on a tiny hand-made batch: structure, pairing and counts."""

from __future__ import annotations

import numpy as np
import pytest

from lola.replay import protocol as P
from lola.replay import ts_refresh as R


def _batch():
    ctr = np.array([[0.02, 0.05, 0.0], [0.04, 0.03, 0.06]])
    return P.ReplayBatch(("a", "b"), np.array([2, 3]), ctr, np.zeros((2, 3)))


def test_threshold_zero_is_the_baseline_with_one_quadrature_per_decision():
    doc = R.run_ts_refresh(_batch(), [20], [0.0, 0.2], reps=3, seed=5)
    rows = [r for r in doc["results"] if r["ts_prior"] == [1.0, 1.0]]
    zero, loose = rows
    assert zero["ts_refresh"] == 0.0 and zero["diff_pct"] == 0.0 and zero["ci95_pct"] == [0.0, 0.0]
    assert zero["quadratures_per_decision"] == 1.0  # every decision sees a new posterior
    assert 0.0 < loose["quadratures_per_decision"] < 1.0
    assert len(doc["results"]) == 2 * len(R.TS_PRIORS)
    assert "| 0.2 |" in R.markdown_ts_refresh(doc)


def test_runs_are_paired_and_deterministic():
    b = _batch()
    params = R.ExperimentParams(policy="ts", ts_refresh=0.0)
    c1, reg1, q1, n1 = R.run_threshold(b, params, 20, 2, 9)
    c2, reg2, q2, n2 = R.run_threshold(b, params, 20, 2, 9)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(reg1, reg2)
    assert (q1, n1) == (q2, n2) == (n1, 2 * 20 * (2 + 3))
    assert np.all(reg1 >= 0.0)


def test_paired_difference():
    base = np.array([[10.0], [20.0], [30.0]])
    same = R.paired_difference(base, base)
    assert same["diff_pct"] == 0.0 and same["within_ci_of_zero"]
    shifted = R.paired_difference(base, base - np.array([[1.0], [2.0], [3.0]]))
    assert shifted["diff_pct"] == pytest.approx(-10.0)
