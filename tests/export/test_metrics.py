"""Prior metrics against hand-computed values and scipy."""

from __future__ import annotations

import numpy as np
import pytest

from lola.data.upworthy import HeadlineTest
from lola.export.metrics import mae, pairwise_accuracy, r2, significant_pairs, top1_accuracy, two_proportion_p


def _test(clicks, imps, names=None):
    names = names or tuple(f"h{i}" for i in range(len(clicks)))
    return HeadlineTest("t", "e", tuple(names), np.array(imps), np.array(clicks))


def test_r2_and_mae():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert r2(y, y) == pytest.approx(1.0)
    assert r2(y, np.full(4, y.mean())) == pytest.approx(0.0)
    assert r2(y, y + 1) == pytest.approx(1 - 4 / 5)
    assert mae(y, y + 0.5) == pytest.approx(0.5)


def test_two_proportion_p_matches_scipy():
    from scipy.stats import norm

    c1, n1, c2, n2 = 30, 1000, 55, 1000
    pooled = (c1 + c2) / (n1 + n2)
    z = (c2 / n2 - c1 / n1) / np.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert two_proportion_p(c1, n1, c2, n2) == pytest.approx(2 * norm.sf(abs(z)))
    assert two_proportion_p(0, 100, 0, 100) == 1.0


def test_top1_splits_ties_fairly():
    tests = [_test([10, 50, 20], [1000, 1000, 1000]), _test([40, 10], [1000, 1000])]
    perfect = top1_accuracy(tests, lambda t: t.ctrs)
    constant = top1_accuracy(tests, lambda t: np.zeros(t.n_arms))
    wrong = top1_accuracy(tests, lambda t: -t.ctrs)
    assert perfect == 1.0
    assert constant == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert wrong == 0.0


def test_pairwise_counts_only_significant_pairs():
    test = _test([10, 60, 12], [2000, 2000, 2000])
    pairs = significant_pairs(test)
    assert (0, 1) in pairs and (1, 2) in pairs and (0, 2) not in pairs
    acc, n = pairwise_accuracy([test], lambda t: t.ctrs)
    assert (acc, n) == (1.0, 2)
    acc, _ = pairwise_accuracy([test], lambda t: np.zeros(3))
    assert acc == 0.5
    acc, _ = pairwise_accuracy([test], lambda t: np.array([0.0, 1.0, 2.0]))  # gets (0,1) right, (1,2) wrong
    assert acc == 0.5
