"""Contextual part of ``lola bench kernels``: LLM-LinUCB / LLM-FALCON select+update with a new
user context per decision, d = 32 after interaction terms (arm_dim 4 x user_dim 8), K = 4, float64.

* ``numba_per_s``: :meth:`ContextualState.simulate`, the fused decide+learn loop (the same
  @njit ``ctx_decide``/``ctx_learn`` the worker's ``select``/``update`` call), one thread;
  ``numba_cpu_per_s`` the same over this process's CPU time (``target_met`` reads it: on a
  shared machine wall clock counts other processes' time);
* ``batch_api_per_s``: the worker-facing path, ``select`` then ``update`` on batches of
  ``BATCH`` decisions (validation included; each batch sees the state of its start);
* peers on the same workload (timed on fewer decisions, reported per decision):
  Vowpal Wabbit ``--cb_explore_adf --squarecb`` (FALCON's peer; text examples with a shared
  user namespace, per-action arm namespaces and ``-q ua`` interactions, as a user writes them)
  and MABWiser ``LinUCB`` (``predict`` + ``partial_fit`` per decision).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

ARM_DIM = 4
USER_DIM = 8
K = 4
BATCH = 1024


def _workload(n: int, n_exp: int, seed: int):
    rng = np.random.default_rng(seed)
    users = np.column_stack([np.ones(n), rng.normal(size=(n, USER_DIM - 1))])
    rows = rng.integers(0, n_exp, n).astype(np.int64)
    seg = rng.integers(0, 4, n).astype(np.int64)
    ctr = rng.uniform(0.01, 0.1, (n_exp, 4, K))
    return users, rows, seg, ctr


def _state(algorithm: str, n_exp: int, seed: int):
    from lola.kernels.contextual_state import ContextualParams, ContextualState

    rng = np.random.default_rng(seed + 1)
    st = ContextualState(ARM_DIM, USER_DIM, capacity_experiments=n_exp, capacity_arms=K)
    for _ in range(n_exp):
        row = st.add_experiment(ContextualParams(algorithm, alpha=0.1, n_aux=100.0, gamma_scale=1.0))
        for k in range(K):
            st.add_arm(row, np.r_[1.0, rng.normal(size=ARM_DIM - 1)], prior_ctr=0.05)
    return st


def _time_numba(algorithm: str, n: int, n_exp: int, seed: int, repeats: int) -> tuple[float, float, float]:
    """(wall-clock rate, CPU-time rate, mean reward), best of ``repeats``."""
    users, rows, seg, ctr = _workload(n, n_exp, seed)
    _state(algorithm, 1, seed).simulate(rows[:10] * 0, users[:10], seg[:10], ctr, seed)  # compile
    best, best_cpu, mean_click = 0.0, 0.0, 0.0
    for _ in range(repeats):
        st = _state(algorithm, n_exp, seed)
        t0, c0 = time.perf_counter(), time.process_time()
        _, _, clicks = st.simulate(rows, users, seg, ctr, seed)
        best = max(best, n / (time.perf_counter() - t0))
        best_cpu = max(best_cpu, n / (time.process_time() - c0))
        mean_click = float(clicks.mean())
    return best, best_cpu, mean_click


def _time_batch_api(algorithm: str, n: int, n_exp: int, seed: int) -> float:
    users, rows, seg, ctr = _workload(n, n_exp, seed)
    st = _state(algorithm, n_exp, seed)
    rng = np.random.default_rng(seed)
    clicks = (rng.random(n) < 0.05).astype(np.float64)
    ones = np.ones(BATCH)
    st.select(rows[:BATCH], users[:BATCH], 0)  # compile
    st.update(rows[:1], np.zeros(1, dtype=np.int64), users[:1], np.zeros(1), np.zeros(1))
    t0 = time.perf_counter()
    for i in range(0, n - BATCH + 1, BATCH):
        r, u = rows[i:i + BATCH], users[i:i + BATCH]
        slots, _ = st.select(r, u, i)
        st.update(r, slots, u, ones, clicks[i:i + BATCH])
    return (n // BATCH * BATCH) / (time.perf_counter() - t0)


def _vw_run(n: int, seed: int) -> float | None:
    try:
        import vowpalwabbit
    except ImportError:  # an optional peer (dev extra), not our code
        return None
    users, _, seg, ctr = _workload(n, 1, seed)
    rng = np.random.default_rng(seed)
    arms = [" ".join(f"a{j}:{v:.4f}" for j, v in enumerate(rng.normal(size=ARM_DIM - 1))) for _ in range(K)]
    vw = vowpalwabbit.Workspace("--cb_explore_adf --squarecb -q ua --quiet")
    t0 = time.perf_counter()
    for i in range(n):
        shared = "shared |u " + " ".join(f"f{j}:{v:.4f}" for j, v in enumerate(users[i, 1:]))
        ex = [shared] + [f"|a {a}" for a in arms]
        p = np.asarray(vw.predict(ex))
        k = int(min(np.searchsorted(np.cumsum(p), rng.random() * p.sum()), K - 1))
        cost = -1.0 if rng.random() < ctr[0, seg[i], k] else 0.0
        ex[k + 1] = f"{k}:{cost}:{p[k]:.6f} |a {arms[k]}"
        vw.learn(ex)
    rate = n / (time.perf_counter() - t0)
    vw.finish()
    return rate


def _mabwiser_run(n: int, seed: int) -> float:
    from mabwiser.mab import MAB, LearningPolicy

    users, _, seg, ctr = _workload(n, 1, seed)
    rng = np.random.default_rng(seed)
    mab = MAB(list(range(K)), LearningPolicy.LinUCB(alpha=0.1), seed=seed)
    mab.fit([0, 1, 2, 3], [0, 0, 0, 0], users[:4])
    t0 = time.perf_counter()
    for i in range(n):
        k = int(mab.predict(users[i:i + 1]))
        r = 1.0 if rng.random() < ctr[0, seg[i], k] else 0.0
        mab.partial_fit([k], [r], users[i:i + 1])
    return n / (time.perf_counter() - t0)


def run(decisions: int = 1_000_000, experiments: int = 1_000, peer_decisions: int = 5_000, repeats: int = 3,
        seed: int = 0) -> dict[str, Any]:
    """The ``contextual`` section of ``lola bench kernels --json``."""
    out: dict[str, Any] = {"workload": {
        "d": ARM_DIM * USER_DIM, "arm_dim": ARM_DIM, "user_dim": USER_DIM, "arms": K, "decisions": decisions,
        "experiments": experiments, "dtype": "float64", "threads": 1,
        "context": "a new standard-normal user vector per decision; experiments drawn at random",
        "peers": f"timed on {peer_decisions} decisions of one experiment, per decision"}}
    vw = _vw_run(peer_decisions, seed)
    mab = _mabwiser_run(peer_decisions, seed)
    for algorithm in ("linucb", "falcon"):
        rate, cpu_rate, mean_click = _time_numba(algorithm, decisions, experiments, seed, repeats)
        api = _time_batch_api(algorithm, min(decisions, 200_000), experiments, seed)
        row = {"numba_per_s": round(rate), "numba_cpu_per_s": round(cpu_rate), "batch_api_per_s": round(api),
               "mean_reward": round(mean_click, 5), "target_per_s": 1_000_000, "target_met": cpu_rate >= 1_000_000}
        if algorithm == "linucb":
            row.update(mabwiser_linucb_per_s=round(mab), numba_vs_mabwiser=round(rate / mab, 1))
        if vw is not None:
            row.update(vw_squarecb_per_s=round(vw), numba_vs_vw=round(rate / vw, 1))
        out[algorithm] = row
    return out
