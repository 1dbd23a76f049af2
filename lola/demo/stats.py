"""What the worker did, measured against the archive truth: allocation, clicks, calibration.

Clicks are LOLA's Figure 7 score, clicks per test per period = total clicks / tau over
a horizon of tau x K impressions, written per impression as K x clicks / impressions
so that a run stopped before the horizon stays on the same scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from lola.data.upworthy import HeadlineTest
from lola.export import metrics
from lola.stream.loadgen import experiment_id, variant_id


def match_experiments(snapshot: dict[str, dict], tests: Sequence[HeadlineTest], run_id: str
                      ) -> dict[str, tuple[HeadlineTest, dict[str, int]]]:
    """Snapshot experiment id -> (test, {variant id: headline index}) for the ids the closed
    loop of run ``run_id`` gives (:func:`lola.stream.loadgen.experiment_id`); others are left out."""
    out: dict[str, tuple[HeadlineTest, dict[str, int]]] = {}
    for test in tests:
        exp_id = experiment_id(run_id, test)
        arms = snapshot.get(exp_id)
        if arms is not None:
            out[exp_id] = (test, {variant_id(i): i for i in range(test.n_arms) if variant_id(i) in arms})
    return out


def p_best_of_best(snapshots: dict[str, dict], tests: Sequence[HeadlineTest], run_id: str) -> dict[str, float]:
    """Mean over the matched experiments of the P(best) the snapshot's ``stats`` give each test's
    archive-best headline: data only and with the prior (empty if no snapshot carries stats)."""
    data, prior = [], []
    for test in tests:
        arms = ((snapshots.get(experiment_id(run_id, test)) or {}).get("stats") or {}).get("arms", {})
        best = arms.get(variant_id(test.best))
        if best is not None:
            data.append(best["p_best"])
            prior.append(best["p_best_with_prior"])
    if not data:
        return {}
    return {"p_best_of_best": float(np.mean(data)), "p_best_of_best_with_prior": float(np.mean(prior))}


@dataclass
class AllocationStats:
    """What the worker did on the matched experiments, from one snapshot."""

    experiments: int = 0
    impressions: int = 0
    clicks: int = 0
    best_share: float = float("nan")  # share of impressions on each test's best headline
    expected_clicks_per_period: float = float("nan")  # K * (impressions @ archive CTR) / impressions, mean over tests
    realised_clicks_per_period: float = float("nan")  # K * clicks / impressions, mean over tests
    realised_se: float = float("nan")
    per_test: list[dict] = field(default_factory=list)


def allocation_stats(snapshot: dict[str, dict], tests: Sequence[HeadlineTest], run_id: str) -> AllocationStats:
    """Summarise a counts view (:func:`lola.stream.snapshot.counts_view`) against the archive truth."""
    stats = AllocationStats()
    best_hits = 0
    expected, realised = [], []
    for exp_id, (test, index) in match_experiments(snapshot, tests, run_id).items():
        imps = np.zeros(test.n_arms)
        clicks = np.zeros(test.n_arms)
        for vid, i in index.items():
            arm = snapshot[exp_id][vid]
            imps[i] += float(arm.get("impressions", 0) or 0)
            clicks[i] += float(arm.get("clicks", 0) or 0)
        n = imps.sum()
        if n <= 0:
            continue
        stats.experiments += 1
        stats.impressions += int(n)
        stats.clicks += int(clicks.sum())
        best_hits += int(imps[test.best])
        k = test.n_arms
        expected.append(float(k * (imps @ test.ctrs) / n))
        realised.append(float(k * clicks.sum() / n))
        stats.per_test.append({
            "experiment_id": exp_id, "arms": k, "impressions": int(n),
            "clicks": int(clicks.sum()), "best_share": float(imps[test.best] / n),
            "shares": (imps / n).round(3).tolist(), "true_ctr": [round(float(c), 4) for c in test.ctrs],
            "realised_ctr": [float(c / i) if i else float("nan") for c, i in zip(clicks, imps)],
        })
    if stats.impressions:
        stats.best_share = best_hits / stats.impressions
        stats.expected_clicks_per_period = float(np.mean(expected))
        stats.realised_clicks_per_period = float(np.mean(realised))
        stats.realised_se = float(np.std(realised, ddof=1) / math.sqrt(len(realised))) if len(realised) > 1 else float("nan")
    return stats


def uniform_share(tests: Sequence[HeadlineTest]) -> float:
    """Share of impressions on the best headline under an even split, averaged over tests."""
    return float(np.mean([1.0 / t.n_arms for t in tests])) if tests else float("nan")


def reference_clicks(tests: Sequence[HeadlineTest]) -> dict[str, float]:
    """Clicks per test per period of two fixed allocations, from the archive truth: uniform and oracle."""
    return {
        "uniform (A/B split)": float(np.mean([t.n_arms * t.uniform_ctr for t in tests])),
        "oracle (best headline always)": float(np.mean([t.n_arms * t.oracle_ctr for t in tests])),
    }


def calibration_table(priors: dict[str, float], tests: Sequence[HeadlineTest], final_snapshot: dict[str, dict],
                      run_id: str) -> dict[str, Any] | None:
    """Predicted prior CTR vs archive CTR (and vs the run's realised CTR) per headline.

    R², MAE and top-1 accuracy are :mod:`lola.export.metrics`' (ties split fairly), so
    the demo, the replay and ``lola priors eval`` score one prior alike.
    """
    pairs = [(priors[h], c) for t in tests for h, c in zip(t.headlines, t.ctrs) if h in priors]
    if len(pairs) < 2:
        return None
    p, y = (np.asarray(v, dtype=np.float64) for v in zip(*pairs))
    ranked = [t for t in tests if all(h in priors for h in t.headlines)]
    out: dict[str, Any] = {
        "headlines": len(p), "mae": metrics.mae(y, p), "r2": metrics.r2(y, p),
        "corr": float(np.corrcoef(p, y)[0, 1]) if p.std() > 0 and y.std() > 0 else float("nan"),
        "mean_pred": float(p.mean()), "mean_true": float(y.mean()), "pred": p, "true": y,
        # Within-test ranking: does the prior put the best headline first?
        "top1": metrics.top1_accuracy(ranked, lambda t: np.array([priors[h] for h in t.headlines])),
        "top1_tests": len(ranked),
    }
    realised = []  # (prior, realised CTR) of arms with >= 200 impressions in this run
    for exp_id, (t, index) in match_experiments(final_snapshot, tests, run_id).items():
        for vid, i in index.items():
            arm = final_snapshot[exp_id][vid]
            imps = float(arm.get("impressions", 0) or 0)
            if imps >= 200 and t.headlines[i] in priors:
                realised.append((priors[t.headlines[i]], float(arm.get("clicks", 0) or 0) / imps))
    out["realised"] = realised
    return out
