"""Prior-quality metrics (LOLA section 4.2 and appendix F), NumPy only.

* ``r2`` and ``mae`` of per-headline CTR;
* ``top1_accuracy``: over headline tests (clickability_test_id x eyecatcher_id
  with >= 2 headlines), the chance that the headline with the highest predicted
  CTR has the highest true CTR. Ties are split fairly: a test scores the share
  of predicted-best headlines that are truly best, so a constant predictor
  scores exactly the random-guess rate;
* ``pairwise_accuracy``: over headline pairs of one test whose CTRs differ
  significantly (two-sided two-proportion z-test, p < alpha), the share ordered
  correctly; a predicted tie counts one half;
* ``per_test_spread``: each test's standard deviation of predicted CTRs;
* ``paired_bootstrap``: a paired difference of two predictors' per-test values with a
  bootstrap interval over tests (``lola priors eval --baseline``, ``readout-study``).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from lola.data.upworthy import HeadlineTest


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    return float("nan") if ss_tot == 0 else 1.0 - float(np.sum((y_true - y_pred) ** 2)) / ss_tot


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y_true, float) - np.asarray(y_pred, float))))


def two_proportion_p(c1: float, n1: float, c2: float, n2: float) -> float:
    """Two-sided p-value of the pooled two-proportion z-test."""
    pooled = (c1 + c2) / (n1 + n2)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        return 1.0
    z = abs(c1 / n1 - c2 / n2) / se
    return math.erfc(z / math.sqrt(2.0))


def per_test_top1(tests: Sequence[HeadlineTest], predict: Callable[[HeadlineTest], np.ndarray]) -> np.ndarray:
    """Each test's top-1 score: the share of its predicted-best headlines that are truly best."""
    scores = []
    for test in tests:
        pred = np.asarray(predict(test), float)
        true = test.ctrs
        picked = np.flatnonzero(pred == pred.max())
        best = set(np.flatnonzero(true == true.max()).tolist())
        scores.append(sum(i in best for i in picked) / len(picked))
    return np.asarray(scores, dtype=np.float64)


def top1_accuracy(tests: Sequence[HeadlineTest], predict: Callable[[HeadlineTest], np.ndarray]) -> float:
    scores = per_test_top1(tests, predict)
    return float(np.mean(scores)) if len(scores) else float("nan")


def significant_pairs(test: HeadlineTest, alpha: float = 0.05) -> list[tuple[int, int]]:
    """Index pairs (i, j) of one test whose CTRs differ at level ``alpha``."""
    out = []
    for i in range(test.n_arms):
        for j in range(i + 1, test.n_arms):
            p = two_proportion_p(test.clicks[i], test.impressions[i], test.clicks[j], test.impressions[j])
            if p < alpha:
                out.append((i, j))
    return out


def per_test_pairs(
    tests: Sequence[HeadlineTest], predict: Callable[[HeadlineTest], np.ndarray], alpha: float = 0.05,
    pairs: Sequence[list[tuple[int, int]]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per test: significant pairs ordered correctly (a predicted tie counts one half) and their number.
    ``pairs`` (one :func:`significant_pairs` list per test) saves recomputing them."""
    correct = np.zeros(len(tests))
    total = np.zeros(len(tests))
    for k, test in enumerate(tests):
        found = significant_pairs(test, alpha) if pairs is None else pairs[k]
        if not found:
            continue
        pred = np.asarray(predict(test), float)
        true = test.ctrs
        for i, j in found:
            total[k] += 1
            dp = pred[i] - pred[j]
            if dp == 0:
                correct[k] += 0.5
            elif (dp > 0) == (true[i] > true[j]):
                correct[k] += 1.0
    return correct, total


def pairwise_accuracy(
    tests: Sequence[HeadlineTest], predict: Callable[[HeadlineTest], np.ndarray], alpha: float = 0.05
) -> tuple[float, int]:
    """(accuracy, number of significant pairs)."""
    correct, total = per_test_pairs(tests, predict, alpha)
    n = int(total.sum())
    return (float(correct.sum()) / n if n else float("nan")), n


def per_test_spread(tests: Sequence[HeadlineTest], predict: Callable[[HeadlineTest], np.ndarray]) -> np.ndarray:
    """Each test's within-test spread of the prior: the standard deviation of its headlines' predicted CTRs.
    This is what decides how far LOLA's index is pushed apart by the prior (the week level cancels)."""
    return np.array([float(np.std(np.asarray(predict(t), float))) for t in tests], dtype=np.float64)


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, weights: np.ndarray | None = None, n_boot: int = 2000, seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Paired difference ``A - B`` of a per-test metric, with a percentile bootstrap interval over tests.

    ``a``/``b`` are per-test values of two predictors on the same tests; with ``weights`` the
    statistic is the weighted mean (pairwise accuracy: per-test correct counts over per-test pair
    counts, i.e. ``a`` = correct / total and ``weights`` = total). Tests are resampled with
    replacement ``n_boot`` times with a seeded generator, so the interval is reproducible.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired_bootstrap needs two equal, non-empty 1-d arrays, got {a.shape} and {b.shape}")
    w = np.ones_like(a) if weights is None else np.asarray(weights, float)
    keep = w > 0
    a, b, w = a[keep], b[keep], w[keep]
    d = np.where(np.isfinite(a - b), a - b, 0.0)
    if len(d) == 0:
        return {"diff": float("nan"), "lo": float("nan"), "hi": float("nan"), "n_tests": 0}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    boots = (w[idx] * d[idx]).sum(axis=1) / w[idx].sum(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(boots, [tail, 1.0 - tail])
    return {"diff": float(np.sum(w * d) / np.sum(w)), "lo": float(lo), "hi": float(hi), "n_tests": int(len(d)),
            "a": float(np.sum(w * a) / np.sum(w)), "b": float(np.sum(w * b) / np.sum(w))}
