"""Readout objectives that match LOLA's use of the prior: the order of headlines inside a test.

LOLA reads the prior only through the differences between the arms of one experiment (the
week level cancels in its index), so a readout fitted by per-headline MSE optimises something
slightly different from what the bandit needs. This module fits the same *linear* readout
(``score = x @ w + b`` on the standardised embedding, so serving stays one dot product) under
three objectives, alone or mixed:

* ``mse``: impression-weighted squared error of the standardised training target (the ridge
  of :mod:`lola.export.readout`, written as a loss so that it can be mixed);
* ``listnet``: ListNet (Cao et al. 2007): for every training test, the cross-entropy between
  the softmax of the true within-test CTRs (in units of the training target's standard
  deviation, divided by ``temperature``) and the softmax of the scores; tests are weighted by
  their impressions (divided by the mean), so a well-measured test counts more;
* ``ranknet``: RankNet / Bradley-Terry (Burges et al. 2005): ``log(1 + exp(-(s_i - s_j)))``
  over the pairs of one test whose CTRs differ significantly (the same two-proportion z-test,
  p < 0.05, as the evaluation's pairwise accuracy), winner ``i``.

``mix`` in [0, 1] is the weight of the MSE term: ``loss = (1 - mix) * ranking + mix * mse``;
an L2 penalty ``l2 * |w|^2`` is added. The loss is convex in ``(w, b)`` and minimised by
L-BFGS (scipy) with analytic gradients; it is deterministic (no seed).

Ranking losses fix the direction of ``w``, not its scale, so a ranking readout is followed by a
**calibration** (:func:`calibration_scale`): one factor ``gamma`` on the within-test deviations
of the scores, fitted on the tune split, so the prior's within-test gaps are in CTR units. Two
rules: ``slope``, the impression-weighted least-squares slope of the realised within-test
deviations on the predicted ones (what an MSE-optimal prior mean would use), and ``spread``,
which matches the predicted within-test standard deviation to the realised one after removing
the binomial sampling variance. Neither changes any ranking.

Build-time only (numpy and scipy); serving reads the folded weights from ``readout.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lola.data.upworthy import HeadlineTest
from lola.errors import ConfigError, DataError
from lola.export.config import CALIBRATIONS, OBJECTIVES
from lola.export.metrics import significant_pairs



@dataclass(frozen=True)
class TestGroups:
    """Headline tests as rows of indices into a feature matrix (``-1`` pads short tests)."""

    index: np.ndarray  # [G, K] int64
    ctr: np.ndarray  # [G, K] float64, 0 where padded
    impressions: np.ndarray  # [G, K] float64, 0 where padded
    weight: np.ndarray  # [G] test weight: impressions / mean impressions
    pairs: np.ndarray  # [P, 2] row indices (winner, loser) of significantly different pairs

    @property
    def mask(self) -> np.ndarray:
        return self.index >= 0

    def __len__(self) -> int:
        return len(self.index)


def build_groups(tests: Sequence[HeadlineTest], row_of: dict[str, int], alpha: float = 0.05) -> TestGroups:
    """Tests restricted to headlines that have a row (tests left with < 2 such headlines are dropped)."""
    rows, ctrs, imps, pairs = [], [], [], []
    for test in tests:
        keep = [k for k, h in enumerate(test.headlines) if h.strip() in row_of]
        if len(keep) < 2:
            continue
        idx = [row_of[test.headlines[k].strip()] for k in keep]
        rows.append(idx)
        ctrs.append(test.ctrs[keep])
        imps.append(test.impressions[keep].astype(np.float64))
        kept = set(keep)
        for i, j in significant_pairs(test, alpha):
            if i in kept and j in kept:
                hi, lo = (i, j) if test.ctrs[i] > test.ctrs[j] else (j, i)
                pairs.append((row_of[test.headlines[hi].strip()], row_of[test.headlines[lo].strip()]))
    if not rows:
        raise DataError("no test has two headlines with features; cannot fit a ranking readout")
    width = max(len(r) for r in rows)
    index = np.full((len(rows), width), -1, dtype=np.int64)
    ctr = np.zeros((len(rows), width))
    imp = np.zeros((len(rows), width))
    for g, (r, c, n) in enumerate(zip(rows, ctrs, imps)):
        index[g, : len(r)], ctr[g, : len(r)], imp[g, : len(r)] = r, c, n
    totals = imp.sum(axis=1)
    pair_array = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return TestGroups(index, ctr, imp, totals / totals.mean(), pair_array)


def _masked_softmax(logits: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.where(mask, logits, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.where(mask, np.exp(z), 0.0)
    total = e.sum(axis=1, keepdims=True)
    return e / total, np.where(mask, z - np.log(total), 0.0)


def listnet_loss(s: np.ndarray, groups: TestGroups, target_std: float, temperature: float = 1.0
                 ) -> tuple[float, np.ndarray]:
    """Weighted mean ListNet cross-entropy over tests, and its gradient with respect to ``s``."""
    mask = groups.mask
    safe = np.where(mask, groups.index, 0)
    p, _ = _masked_softmax(groups.ctr / (target_std * temperature), mask)
    q, log_q = _masked_softmax(s[safe], mask)
    w = groups.weight / groups.weight.sum()
    loss = float(-(w[:, None] * p * log_q).sum())
    grad_rows = np.where(mask, w[:, None] * (q - p), 0.0)
    grad = np.zeros_like(s)
    np.add.at(grad, safe[mask], grad_rows[mask])
    return loss, grad


def ranknet_loss(s: np.ndarray, groups: TestGroups) -> tuple[float, np.ndarray]:
    """Mean RankNet loss over the significant pairs (winner first), and its gradient."""
    if len(groups.pairs) == 0:
        raise DataError("no significantly different pair in the training tests; ranknet has nothing to fit")
    win, lose = groups.pairs[:, 0], groups.pairs[:, 1]
    d = s[win] - s[lose]
    loss = float(np.mean(np.logaddexp(0.0, -d)))
    g = -1.0 / (1.0 + np.exp(d)) / len(d)  # d/dd of log(1 + e^-d), averaged
    grad = np.zeros_like(s)
    np.add.at(grad, win, g)
    np.add.at(grad, lose, -g)
    return loss, grad


def mse_loss(s: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    r = s - y
    total = w.sum()
    return float(np.sum(w * r * r) / total), 2.0 * w * r / total


@dataclass(frozen=True)
class ReadoutFit:
    """A fitted linear readout on standardised features: ``score = x_std @ coef + intercept``."""

    coef: np.ndarray
    intercept: float
    objective: str
    mix: float
    l2: float
    temperature: float
    converged: bool
    iterations: int


def fit_linear(x: np.ndarray, objective: str, groups: TestGroups | None = None, y: np.ndarray | None = None,
               w: np.ndarray | None = None, mix: float = 0.0, l2: float = 1e-3, temperature: float = 1.0,
               target_std: float = 1.0, max_iter: int = 500, init: np.ndarray | None = None) -> ReadoutFit:
    """Minimise ``(1 - mix) * objective + mix * mse + l2 * |coef|^2`` over a linear score of ``x``.

    ``x`` is standardised (rows: headlines). ``groups`` index its rows for the ranking term;
    ``y``/``w`` (standardised target, impression weights) are needed for ``mse`` or ``mix > 0``.
    For ``objective="mse"`` the ``mix`` is ignored (the loss is all MSE). ``init`` (``coef`` then
    ``intercept``) warm-starts the optimiser, e.g. from the fit at a neighbouring penalty.
    """
    from scipy.optimize import minimize

    if objective not in OBJECTIVES:
        raise ConfigError(f"readout objective must be one of {OBJECTIVES}, got {objective!r}")
    if not 0.0 <= mix <= 1.0:
        raise ConfigError(f"readout mix must be in [0, 1], got {mix}")
    if l2 < 0 or temperature <= 0:
        raise ConfigError(f"readout l2 must be >= 0 and temperature > 0, got {l2} and {temperature}")
    rank_weight = 0.0 if objective == "mse" else 1.0 - mix
    mse_weight = 1.0 - rank_weight
    if mse_weight > 0 and (y is None or w is None):
        raise ConfigError("an MSE term needs the training target and weights")
    if rank_weight > 0 and groups is None:
        raise ConfigError(f"objective {objective} needs the training tests")
    n, d = x.shape

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        coef, b = theta[:d], theta[d]
        s = x @ coef + b
        total, grad_s = l2 * float(coef @ coef), np.zeros(n)
        if rank_weight > 0:
            value, g = (listnet_loss(s, groups, target_std, temperature) if objective == "listnet"
                        else ranknet_loss(s, groups))
            total, grad_s = total + rank_weight * value, grad_s + rank_weight * g
        if mse_weight > 0:
            value, g = mse_loss(s, y, w)
            total, grad_s = total + mse_weight * value, grad_s + mse_weight * g
        grad = np.concatenate([x.T @ grad_s + 2.0 * l2 * coef, [grad_s.sum()]])
        return total, grad

    start = np.zeros(d + 1) if init is None else np.asarray(init, dtype=np.float64)
    result = minimize(loss_and_grad, start, jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "gtol": 1e-7})
    return ReadoutFit(result.x[:d].copy(), float(result.x[d]), objective, mix if rank_weight > 0 else 1.0, l2,
                      temperature, bool(result.success), int(result.nit))


def _within(values: np.ndarray, groups: TestGroups) -> tuple[np.ndarray, np.ndarray]:
    """Per-test impression-weighted demeaned ``values[index]`` and the impressions, both [G, K]."""
    mask = groups.mask
    v = np.where(mask, values[np.where(mask, groups.index, 0)], 0.0)
    n = groups.impressions
    mean = (n * v).sum(axis=1, keepdims=True) / n.sum(axis=1, keepdims=True)
    return np.where(mask, v - mean, 0.0), n


def calibration_scale(scores: np.ndarray, groups: TestGroups, rule: str) -> float:
    """The factor ``gamma`` that puts the scores' within-test deviations in CTR units (see module doc).

    ``scores`` index like ``groups`` (the tune split's rows). ``none`` returns 1.
    """
    if rule not in CALIBRATIONS:
        raise ConfigError(f"calibration must be one of {CALIBRATIONS}, got {rule!r}")
    if rule == "none":
        return 1.0
    pred, n = _within(scores, groups)
    true = groups.ctr - (n * groups.ctr).sum(axis=1, keepdims=True) / n.sum(axis=1, keepdims=True)
    true = np.where(groups.mask, true, 0.0)
    if rule == "slope":
        denominator = float((n * pred * pred).sum())
        gamma = float((n * pred * true).sum()) / denominator if denominator > 0 else 0.0
    else:
        # binomial variance of each headline's CTR, weighted like the spread itself
        noise = np.where(groups.mask, groups.ctr * (1.0 - groups.ctr) / np.maximum(n, 1.0), 0.0)
        realised = float((n * true * true).sum() - (n * noise).sum())
        predicted = float((n * pred * pred).sum())
        gamma = float(np.sqrt(max(realised, 0.0) / predicted)) if predicted > 0 else 0.0
    if not np.isfinite(gamma) or gamma <= 0:
        raise DataError(f"calibration '{rule}' found no positive scale ({gamma}); the readout ranks the tune "
                        "tests backwards or not at all")
    return gamma
