"""The ideal observer behind `lola replay ideal-observer`: exact vs rank-reversed prior."""

from __future__ import annotations

import numpy as np
import pytest

from lola.replay.premise import ideal_observer, ideal_observer_accuracy, reversed_ranking
from lola.errors import ConfigError


def test_reversed_ranking_swaps_best_and_worst():
    assert reversed_ranking(np.array([0.01, 0.03, 0.02])).tolist() == [0.03, 0.01, 0.02]
    assert reversed_ranking(np.array([0.02, 0.05])).tolist() == [0.05, 0.02]
    assert reversed_ranking(np.array([0.04, 0.04])).tolist() == [0.04, 0.04]


def test_tied_ctrs_have_nothing_to_tell_apart():
    assert ideal_observer_accuracy(np.array([0.02, 0.02, 0.02]), 100, 50, np.random.default_rng(0)) is None


def test_far_apart_ctrs_are_always_told_apart():
    acc = ideal_observer_accuracy(np.array([0.01, 0.30]), 200, 500, np.random.default_rng(1))
    assert acc == 1.0


def test_nearly_tied_ctrs_are_a_coin_flip():
    acc = ideal_observer_accuracy(np.array([0.0140, 0.0141]), 50, 4000, np.random.default_rng(2))
    assert 0.45 < acc < 0.56


def test_more_impressions_tell_more():
    ctrs = np.array([0.012, 0.014, 0.017])
    accs = [ideal_observer_accuracy(ctrs, tau, 4000, np.random.default_rng(3)) for tau in (50, 400, 4000)]
    assert accs[0] < accs[1] < accs[2]


def test_summary_counts_tied_tests_and_is_seeded():
    tests = [np.array([0.01, 0.02]), np.array([0.03, 0.03])]
    doc = ideal_observer(tests, (50, 100), draws=200, seed=9)
    assert [r["tau"] for r in doc["results"]] == [50, 100]
    assert all(r["tests"] == 1 and r["tests_all_tied"] == 1 for r in doc["results"])
    assert doc == ideal_observer(tests, (50, 100), draws=200, seed=9)


def test_bad_tau_is_a_config_error():
    with pytest.raises(ConfigError, match="tau and draws must be >= 1"):
        ideal_observer_accuracy(np.array([0.01, 0.02]), 0, 10, np.random.default_rng(0))
