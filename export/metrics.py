"""Prior-quality metrics (LOLA section 4.2 and appendix F), NumPy only.

* ``r2`` and ``mae`` of per-headline CTR;
* ``top1_accuracy``: over headline tests (clickability_test_id x eyecatcher_id
  with >= 2 headlines), the chance that the headline with the highest predicted
  CTR has the highest true CTR. Ties are split fairly: a test scores the share
  of predicted-best headlines that are truly best, so a constant predictor
  scores exactly the random-guess rate;
* ``pairwise_accuracy``: over headline pairs of one test whose CTRs differ
  significantly (two-sided two-proportion z-test, p < alpha), the share ordered
  correctly; a predicted tie counts one half.
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


def top1_accuracy(tests: Sequence[HeadlineTest], predict: Callable[[HeadlineTest], np.ndarray]) -> float:
    scores = []
    for test in tests:
        pred = np.asarray(predict(test), float)
        true = test.ctrs
        picked = np.flatnonzero(pred == pred.max())
        best = set(np.flatnonzero(true == true.max()).tolist())
        scores.append(sum(i in best for i in picked) / len(picked))
    return float(np.mean(scores)) if scores else float("nan")


def significant_pairs(test: HeadlineTest, alpha: float = 0.05) -> list[tuple[int, int]]:
    """Index pairs (i, j) of one test whose CTRs differ at level ``alpha``."""
    out = []
    for i in range(test.n_arms):
        for j in range(i + 1, test.n_arms):
            p = two_proportion_p(test.clicks[i], test.impressions[i], test.clicks[j], test.impressions[j])
            if p < alpha:
                out.append((i, j))
    return out


def pairwise_accuracy(
    tests: Sequence[HeadlineTest], predict: Callable[[HeadlineTest], np.ndarray], alpha: float = 0.05
) -> tuple[float, int]:
    """(accuracy, number of significant pairs)."""
    correct, total = 0.0, 0
    for test in tests:
        pairs = significant_pairs(test, alpha)
        if not pairs:
            continue
        pred = np.asarray(predict(test), float)
        true = test.ctrs
        for i, j in pairs:
            total += 1
            dp = pred[i] - pred[j]
            if dp == 0:
                correct += 0.5
            elif (dp > 0) == (true[i] > true[j]):
                correct += 1.0
    return (correct / total if total else float("nan")), total
