"""Creativity, distinct-n, the λ ranking, its curve and elbow (pure NumPy)."""

from __future__ import annotations

import numpy as np
import pytest

from lola.errors import ConfigError
from lola.generation.score import (creativity, distinct_n, distinct_novelty, elbow, lambda_curve, ngrams, rank,
                                   trade_off)


def unit(rows):
    a = np.asarray(rows, dtype=float)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_distinct_n_counts_repeated_ngrams_once():
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)    # (a b) twice, (b c), (b d)
    assert distinct_n(["a b", "a b"], 1) == pytest.approx(2 / 4)
    assert distinct_n([], 2) == 0.0 and distinct_n(["one"], 2) == 0.0
    assert ngrams("The Cat sat", 2) == {("the", "cat"), ("cat", "sat")}


def test_distinct_novelty_is_the_share_of_unseen_ngrams():
    assert distinct_novelty("dogs love snow", []) == 1.0
    assert distinct_novelty("dogs love snow", ["dogs love snow"]) == 0.0
    # unigrams: 'snow' new of 3 -> 1/3; bigrams: ('love','snow') new of 2 -> 1/2
    assert distinct_novelty("dogs love snow", ["dogs love rain"]) == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_creativity_against_a_slow_twin():
    rng = np.random.default_rng(3)
    cands = ["dogs love snow", "cats hate rain", "dogs love rain", "a new thing entirely"]
    existing = ["dogs love walks"]
    ce, ee = unit(rng.normal(size=(4, 5))), unit(rng.normal(size=(1, 5)))
    got, emb_nov, dist_nov = creativity(cands, ce, existing, ee)
    for i in range(4):
        others = [ee[0]] + [ce[j] for j in range(4) if j != i]
        want_emb = max(0.0, 1.0 - max(float(o @ ce[i]) for o in others))
        want_dist = distinct_novelty(cands[i], existing + [c for j, c in enumerate(cands) if j != i])
        assert emb_nov[i] == pytest.approx(want_emb) and dist_nov[i] == pytest.approx(want_dist)
        assert got[i] == pytest.approx((want_emb + want_dist) / 2)
    with pytest.raises(ConfigError):
        creativity(cands, ce[:2], existing, ee)


def test_a_copy_of_an_existing_variant_has_no_novelty():
    e = unit([[1.0, 0.0], [0.0, 1.0]])
    got, emb_nov, dist_nov = creativity(["same words here"], e[:1], ["same words here"], e[:1])
    assert emb_nov[0] == pytest.approx(0.0, abs=1e-9) and dist_nov[0] == 0.0 and got[0] == pytest.approx(0.0, abs=1e-9)


def test_lambda_moves_the_ranking_from_ctr_to_creativity():
    ctr = np.array([0.03, 0.02, 0.01])
    cre = np.array([0.1, 0.5, 0.9])
    assert rank(ctr, cre, 0.0).tolist() == [0, 1, 2]
    assert rank(ctr, cre, 1.0).tolist() == [2, 1, 0]
    assert np.allclose(trade_off(ctr, cre, 0.5), 0.0)           # symmetric z-scores cancel
    # no prior model: CTR all NaN, creativity alone ranks
    assert rank(np.full(3, np.nan), cre, 0.3).tolist() == [2, 1, 0]
    with pytest.raises(ConfigError, match="lambda"):
        rank(ctr, cre, 1.5)


def test_lambda_curve_trades_ctr_for_creativity_and_finds_the_elbow():
    ctr = np.array([0.050, 0.049, 0.048, 0.030, 0.020, 0.010])
    cre = np.array([0.10, 0.40, 0.45, 0.50, 0.80, 0.90])
    curve = lambda_curve(ctr, cre, k=2)
    assert curve[0]["lambda"] == 0.0 and curve[-1]["lambda"] == 1.0
    assert curve[0]["ctr"] == pytest.approx(0.0495) and curve[-1]["creativity"] == pytest.approx(0.85)
    ctrs = [p["ctr"] for p in curve]
    assert all(a >= b - 1e-12 for a, b in zip(ctrs, ctrs[1:]))   # CTR never rises as λ grows
    knee = elbow(curve)
    assert 0.0 < knee < 1.0
    flat = [{"lambda": 0.0, "ctr": 0.1, "creativity": 0.1}, {"lambda": 1.0, "ctr": 0.1, "creativity": 0.1}]
    assert elbow(flat) == 0.0
