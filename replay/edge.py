"""``lola replay edge``: what edge serving costs against per-decision serving, paired.

Per-decision LOLA recomputes its allocation before every decision (what the worker's
``decision_request`` path does, one decision at a time). Edge serving
(:mod:`lola.kernels.edge`) computes an allocation for the next ``R`` decisions of the
experiment (``R`` = the refresh: impressions between two snapshots) and serves it
unchanged for those ``R`` decisions. Both run the worker's default LOLA
(``lola/data/worker_defaults.json``) on the Upworthy report tests, each test ``reps``
times for ``tau x K`` decisions, through :func:`lola.kernels.edge.simulate_edge` with
common random numbers: decision ``t`` draws its arm with the same uniform under every
refresh, and the ``n``-th impression of an arm clicks with the same uniform, so the
runs differ only where their allocations differ.

Loss of refresh ``R``: ``100 x (clicks per-decision - clicks edge) / clicks per-decision``,
summed over tests and reps; its 95 % interval is a percentile bootstrap over tests
(paired: each resample takes a test's per-decision and edge clicks together).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from lola.data import worker_defaults
from lola.data.upworthy import headline_tests, load_packages, split_packages
from lola.errors import ConfigError
from lola.kernels import BanditState, ExperimentParams
from lola.kernels.edge import METHODS, simulate_edge_clicks
from lola.replay.priors import first_test_weeks, read_priors_csv, score_with_model
from lola.replay.protocol import ReplayBatch, build_batch
from lola.replay.sim import block_seed, plan_blocks

BOOTSTRAP = 4000


def load_report_batch(data: Path, priors_csv: Path | None, model_dir: Path | None,
                      save_priors: Path | None = None) -> ReplayBatch:
    """The report tests of ``data`` (the by-component split's ``test`` part) with their priors.

    Nothing is tuned here, so only the report headlines are scored (with the model, each
    headline with its own test week, as ``lola replay`` does); ``save_priors`` writes
    them as a ``--priors`` CSV for later runs.
    """
    if (priors_csv is None) == (model_dir is None):
        raise ConfigError("give exactly one of --priors CSV or --model DIR")
    packages, _ = load_packages(data)
    tests = headline_tests(split_packages(packages)["test"])
    if not tests:
        raise ConfigError(f"no report tests in {data}")
    headlines = sorted({h for t in tests for h in t.headlines})
    if priors_csv is not None:
        prior = read_priors_csv(priors_csv)
    else:
        prior = score_with_model(model_dir, headlines, want_embeddings=False, test_weeks=first_test_weeks(packages))
    values = prior.lookup(headlines)  # a missing prior is a DataError before any work
    if save_priors is not None:
        save_priors.parent.mkdir(parents=True, exist_ok=True)
        with save_priors.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["headline", "prior_ctr"])
            w.writerows(zip(headlines, (repr(float(v)) for v in values)))
    return build_batch(tests, prior.lookup, None)


def lola_params() -> ExperimentParams:
    """The worker's default LOLA (the setting edge serving serves)."""
    d = worker_defaults.load()
    return ExperimentParams(policy=d["policy"], alpha=float(d["alpha"]), n_aux=float(d["n_aux"]))


def edge_clicks(batch: ReplayBatch, tau: int, reps: int, seed: int, refresh: int, method: str,
                params: ExperimentParams) -> np.ndarray:
    """Clicks float64[n_tests, reps]; ``refresh = 0`` is per-decision serving."""
    out = np.empty((len(batch), reps))
    for blk in plan_blocks(batch):
        k = blk.k
        n_rows = len(blk.tests) * reps
        state = BanditState(capacity_experiments=n_rows, capacity_arms=k)
        ctr = np.zeros((n_rows, k))
        for t_i, test in enumerate(blk.tests):
            for r in range(reps):
                row = state.add_experiment(params)
                for slot in range(k):
                    state.add_arm(row, prior_ctr=float(batch.prior[test, slot]))
                ctr[row] = batch.ctr[test, :k]
        clicks = simulate_edge_clicks(state, np.arange(n_rows, dtype=np.int64), int(tau) * k, ctr,
                                      block_seed(seed, tau, k, blk.index), int(refresh), method)
        out[blk.tests] = clicks.reshape(len(blk.tests), reps)
    return out


def paired_loss(base: np.ndarray, edge: np.ndarray, seed: int, n_boot: int = BOOTSTRAP) -> dict:
    """Loss in % of clicks (base - edge) / base with a paired percentile bootstrap over tests."""
    b = base.sum(axis=1)
    e = edge.sum(axis=1)
    loss = 100.0 * (b.sum() - e.sum()) / b.sum()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(b), size=(n_boot, len(b)))
    bs = b[idx].sum(axis=1)
    boot = 100.0 * (bs - e[idx].sum(axis=1)) / bs
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"loss_pct": float(loss), "ci95_pct": [float(lo), float(hi)],
            "clicks_per_decision": float(b.sum()), "clicks_edge": float(e.sum())}


def run_edge(batch: ReplayBatch, taus: Sequence[int], refreshes: Sequence[int], reps: int, seed: int,
             methods: Sequence[str] = METHODS) -> dict:
    """Every (tau, method, refresh) loss against per-decision serving; JSON-ready."""
    params = lola_params()
    t0 = time.perf_counter()
    results = []
    for tau in taus:
        base = edge_clicks(batch, tau, reps, seed, 0, METHODS[0], params)
        for method in methods:
            for refresh in refreshes:
                edge = edge_clicks(batch, tau, reps, seed, refresh, method, params)
                row = {"tau": int(tau), "method": method, "refresh": int(refresh)}
                row.update(paired_loss(base, edge, seed ^ (tau * 1_000_003 + refresh)))
                results.append(row)
    return {"tests": len(batch), "reps": reps, "seed": seed,
            "policy": {"policy": params.policy, "alpha": params.alpha, "n_aux": params.n_aux},
            "bootstrap": BOOTSTRAP, "wall_seconds": round(time.perf_counter() - t0, 1), "results": results}


def markdown_edge(doc: dict) -> str:
    lines = [f"# edge serving against per-decision LOLA: {doc['tests']} tests x {doc['reps']} reps, "
             f"seed {doc['seed']} ({doc['wall_seconds']} s)", "",
             "| tau | method | refresh | loss % | 95 % interval |", "|---|---|---|---|---|"]
    for r in doc["results"]:
        lo, hi = r["ci95_pct"]
        lines.append(f"| {r['tau']} | {r['method']} | {r['refresh']} | {r['loss_pct']:.3f} | [{lo:.3f}, {hi:.3f}] |")
    return "\n".join(lines)
