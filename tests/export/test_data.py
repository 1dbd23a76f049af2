"""Per-headline targets, target scaling and input text."""

from __future__ import annotations

import numpy as np
import pytest

from lola.data.upworthy import Package
from lola.export.card import head_ctr
from lola.export.data import TargetScaling, build_examples
from lola.export.text import clean_text, model_text


def _p(test, headline, imps, clicks, lede=""):
    return Package(test, "e", headline, imps, clicks, lede=lede)


def test_headlines_pool_across_packages_and_low_traffic_is_dropped():
    packages = [_p("a", "Same", 1000, 10), _p("b", "Same", 3000, 50), _p("a", "Rare", 100, 5), _p("b", "Other", 2000, 20)]
    ex = build_examples(packages, min_impressions=500)
    assert ex.headlines == ("Other", "Same")
    np.testing.assert_allclose(ex.ctr, [20 / 2000, 60 / 4000])
    np.testing.assert_allclose(ex.weights, [2000 / 3000, 4000 / 3000])
    assert build_examples(packages, weight_by_impressions=False).weights.tolist() == [1.0, 1.0, 1.0]


def test_order_of_packages_does_not_matter():
    packages = [_p("a", f"h{i}", 1000 + i, i) for i in range(10)]
    a, b = build_examples(packages), build_examples(packages[::-1])
    assert a.headlines == b.headlines and np.array_equal(a.ctr, b.ctr)


def test_scaling_round_trip_and_weighted_mean():
    ctr, w = np.array([0.01, 0.02, 0.03]), np.array([1.0, 1.0, 2.0])
    s = TargetScaling.fit(ctr, w)
    assert s.mean == pytest.approx(0.0225)
    np.testing.assert_allclose(head_ctr(s.mean, s.std, s.forward(ctr)), ctr)  # the serving inverse
    assert np.average(s.forward(ctr), weights=w) == pytest.approx(0.0, abs=1e-12)


def test_context_text_is_cleaned():
    assert clean_text("<p>Hi &amp;   there</p>") == "Hi & there"
    assert model_text(" A  headline ", "<p>lede</p>", "headline") == "A headline"
    assert model_text("A headline", "<p>lede</p>", "headline_context") == "A headline\nlede"
    assert model_text("A headline", "", "headline_context") == "A headline"
