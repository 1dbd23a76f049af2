"""``lola replay ts-refresh``: what TS's refresh threshold costs in clicks, paired against 0.

TS and LLM-TS decide from a reference posterior that is refreshed only when an arm's
Beta (a, b) moved by more than ``ts_refresh`` x (a + b) (docs/policies.md, "TS
refresh"); 0 refreshes at every state version (plain TS). This replay runs TS on the
Upworthy **tune** tests (the by-component split's ``tune`` part; the report tests stay
unseen, as the default is a tuned setting) at each threshold, every test ``reps`` times
for ``T = tau x K`` decisions, through :func:`lola.kernels.simulate` with propensities
on. Common random numbers: a (test, rep) row uses the same decision keys, hence the same
posterior-draw uniforms and click uniforms, under every threshold, so two runs differ
only where their reference posteriors differ.

Per threshold: Figure 7's score (clicks / tau, averaged over reps and tests), the
pseudo-regret per decision (``sum_k n_k (ctr* - ctr_k) / T`` from the impressions, far
less noisy than clicks), the difference in clicks against threshold 0 in % with its 95 %
interval (paired t across tests, on each test's clicks summed over reps), and the
allocation quadratures per decision (what the propensities cost).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import stats

from lola.data.upworthy import headline_tests, load_packages, split_packages
from lola.errors import ConfigError
from lola.kernels import BanditState, ExperimentParams, simulate
from lola.replay.protocol import ReplayBatch, build_batch
from lola.replay.sim import block_seed, plan_blocks

#: The TS settings compared: the two Beta priors of the replay's TS grid (docs/replay.md).
TS_PRIORS = ((1.0, 1.0), (1.38, 96.11))


def load_tune_batch(data: Path) -> ReplayBatch:
    """The tune tests of ``data`` (no prior needed: plain TS)."""
    packages, _ = load_packages(data)
    tests = headline_tests(split_packages(packages)["tune"])
    if not tests:
        raise ConfigError(f"no tune tests in {data}")
    return build_batch(tests, lambda headlines: np.zeros(len(headlines)), None)


def run_threshold(batch: ReplayBatch, params: ExperimentParams, tau: int, reps: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(clicks float64[n_tests, reps], pseudo-regret float64[n_tests, reps], quadratures, decisions)."""
    clicks = np.empty((len(batch), reps))
    regret = np.empty((len(batch), reps))
    quad = decisions = 0
    for blk in plan_blocks(batch):
        k = blk.k
        n_rows = len(blk.tests) * reps
        ctr = np.repeat(batch.ctr[blk.tests, :k], reps, axis=0)  # row = test-major, then rep
        state = BanditState(capacity_experiments=n_rows, capacity_arms=k)
        state.add_experiments(params, np.full((n_rows, k), np.nan))
        steps = int(tau) * k
        simulate(state, np.arange(n_rows, dtype=np.int64), steps, ctr, block_seed(seed, tau, k, blk.index),
                 propensities=True)
        imp = state.impressions[:n_rows, :k]
        clicks[blk.tests] = state.clicks[:n_rows, :k].sum(axis=1).reshape(len(blk.tests), reps)
        reg = (imp * (ctr.max(axis=1, keepdims=True) - ctr)).sum(axis=1) / steps
        regret[blk.tests] = reg.reshape(len(blk.tests), reps)
        quad += state.ts_quadratures
        decisions += n_rows * steps
    return clicks, regret, quad, decisions


def paired_difference(base: np.ndarray, other: np.ndarray) -> dict:
    """Clicks of ``other`` minus ``base`` in % of ``base``, 95 % paired-t interval across tests."""
    b = base.sum(axis=1)
    d = other.sum(axis=1) - b
    n = len(d)
    half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    scale = 100.0 * n / b.sum()  # mean difference per test -> % of the mean clicks per test
    return {"diff_pct": float(d.mean() * scale), "ci95_pct": [float((d.mean() - half) * scale),
                                                             float((d.mean() + half) * scale)],
            "within_ci_of_zero": bool(abs(d.mean()) <= half)}


def run_ts_refresh(batch: ReplayBatch, taus: Sequence[int], thresholds: Sequence[float], reps: int,
                   seed: int) -> dict:
    """Every (TS prior, tau, threshold) against threshold 0 on the same tests; JSON-ready."""
    if 0.0 not in thresholds:
        thresholds = (0.0, *thresholds)
    t0 = time.perf_counter()
    results = []
    for a0, b0 in TS_PRIORS:
        for tau in taus:
            base = None
            for th in thresholds:
                params = ExperimentParams(policy="ts", ts_alpha0=a0, ts_beta0=b0, ts_refresh=float(th))
                clicks, regret, quad, n_dec = run_threshold(batch, params, tau, reps, seed)
                if th == 0.0:
                    base = clicks
                row = {"ts_prior": [a0, b0], "tau": int(tau), "ts_refresh": float(th),
                       "score": float(clicks.sum() / (tau * reps * len(batch))),
                       "pseudo_regret_per_decision": float(regret.mean()),
                       "quadratures_per_decision": quad / n_dec}
                row.update(paired_difference(base, clicks))
                results.append(row)
    return {"tests": len(batch), "split": "tune", "reps": reps, "seed": seed, "policy": "ts",
            "t_test": "two-sided paired t across tune tests (each test's clicks summed over reps)",
            "wall_seconds": round(time.perf_counter() - t0, 1), "results": results}


def markdown_ts_refresh(doc: dict) -> str:
    lines = [f"# TS refresh threshold against 0: {doc['tests']} tune tests x {doc['reps']} reps, seed {doc['seed']} "
             f"({doc['wall_seconds']} s)", "",
             "| TS prior | tau | ts_refresh | score | pseudo-regret / decision | clicks vs 0 (%) | 95 % interval | "
             "quadratures / decision |", "|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        lo, hi = r["ci95_pct"]
        a0, b0 = r["ts_prior"]
        lines.append(f"| ({a0:g}, {b0:g}) | {r['tau']} | {r['ts_refresh']:g} | {r['score']:.5f} | "
                     f"{r['pseudo_regret_per_decision']:.6f} | {r['diff_pct']:+.3f} | [{lo:+.3f}, {hi:+.3f}] | "
                     f"{r['quadratures_per_decision']:.4f} |")
    return "\n".join(lines)
