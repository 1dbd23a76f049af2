"""Appendix G.1: best-arm identification on Upworthy tests, through lola.kernels.

Success of a test = every arm the method returns has true CTR >= best CTR - 0.5%
(gamma = 0.005, epsilon = 0, delta = 0.2 as in G.1).

* BAI / LLM-BAI: the kernels' Algorithm 2 (``bai`` / ``llm_bai``), run in rounds of
  :data:`CHECK_EVERY` pulls per headline. A test that has stopped returns its good
  set at the first checkpoint after stopping, and its pulls are counted up to that
  checkpoint. A test still running at a pull budget returns its recommendation:
  ``BanditState.bai_recommendation`` (the candidate(s) with the highest Algorithm 2 mean,
  prior pseudo-pulls included; exact ties all returned), and its pulls are the budget.
* A/B test: the kernels' E&C with ``explore_fraction = 1``: an equal number of
  pulls per headline, then the best empirical CTR (exact ties all returned).
* PureLLM: the arm with the highest prior (no pulls).

LLM-BAI's n_aux is tuned on the tune tests over G.1's grid {20, ..., 1000}.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lola.kernels import BanditState, ExperimentParams, simulate
from lola.kernels.policy_table import TABLE
from lola.replay.protocol import ReplayBatch
from lola.replay.report import save_figure
from lola.replay.sim import block_seed, plan_blocks

GOOD_WITHIN = 0.005
BUDGETS = (200, 300, 400, 500, 600)  # pulls per headline, as G.1's A/B test
CHECK_EVERY = 25
N_AUX_GRID = (20.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0, 700.0, 1000.0)


def _success(ctr_row: np.ndarray, chosen: list[int]) -> bool:
    return bool(chosen) and all(ctr_row[c] >= ctr_row.max() - GOOD_WITHIN for c in chosen)


def _block_state(batch: ReplayBatch, blk, params, reps: int, with_prior: bool):
    """One experiment row per (test, rep) of a block, and the true CTRs of its rows."""
    k = blk.k
    n_rows = len(blk.tests) * reps
    state = BanditState(capacity_experiments=n_rows, capacity_arms=k)
    ctr = np.zeros((n_rows, k))
    for test in blk.tests:
        for _ in range(reps):
            row = state.add_experiment(params)
            for slot in range(k):
                state.add_arm(row, prior_ctr=float(batch.prior[test, slot]) if with_prior else None)
            ctr[row] = batch.ctr[test, :k]
    return state, ctr


def _bai_block(batch: ReplayBatch, blk, policy: str, n_aux: float, reps: int, seed: int, budgets,
               radius: str = "hoeffding") -> dict:
    """success[budget] and pulls[budget] arrays for one block (rows = tests x reps)."""
    k = blk.k
    params = ExperimentParams(policy=policy, n_aux=n_aux, bai_epsilon=0.0, bai_gamma=GOOD_WITHIN, bai_delta=0.2,
                              bai_radius=radius)
    state, ctr = _block_state(batch, blk, params, reps, with_prior=TABLE[policy].uses_prior)
    n_rows = ctr.shape[0]
    done_at = np.full(n_rows, -1)
    done_set: dict[int, list[int]] = {}
    results = {b: (np.zeros(n_rows, dtype=bool), np.zeros(n_rows)) for b in budgets}
    rows = np.arange(n_rows, dtype=np.int64)
    pulled = 0
    max_b = max(budgets)
    check = 0
    while pulled < max_b:
        live = rows[done_at < 0]
        if live.size == 0:
            break
        step = min(CHECK_EVERY, max_b - pulled)
        simulate(state, live, step * k, ctr, block_seed(seed, 10_000 + check, k, blk.index))
        pulled += step
        check += 1
        for r in live:
            if state.bai_done_for(int(r)):
                done_at[r] = pulled
                done_set[int(r)] = state.good_arms(int(r))
        for b in budgets:
            if b != pulled:
                continue
            ok, pulls = results[b]
            for r in rows:
                if 0 <= done_at[r] <= b:
                    ok[r] = _success(ctr[r], done_set[int(r)])
                    pulls[r] = done_at[r] * k
                else:
                    # Exact ties are all returned, as the A/B test's E&C commit does.
                    ok[r] = _success(ctr[r], state.bai_recommendation(int(r)))
                    pulls[r] = b * k
    # Tests that stopped before the smallest budget still need their later budgets filled.
    for b in budgets:
        ok, pulls = results[b]
        for r in rows:
            if 0 <= done_at[r] <= b and pulls[r] == 0:
                ok[r] = _success(ctr[r], done_set[int(r)])
                pulls[r] = done_at[r] * k
    return {b: (results[b][0].reshape(len(blk.tests), reps), results[b][1].reshape(len(blk.tests), reps)) for b in budgets}


def _ab_block(batch: ReplayBatch, blk, pulls_per_arm: int, reps: int, seed: int):
    k = blk.k
    horizon = pulls_per_arm * k
    params = ExperimentParams(policy="ec", horizon=horizon, explore_fraction=1.0)
    state, ctr = _block_state(batch, blk, params, reps, with_prior=False)
    n_rows = ctr.shape[0]
    simulate(state, np.arange(n_rows, dtype=np.int64), horizon, ctr, block_seed(seed, 20_000 + pulls_per_arm, k, blk.index))
    ok = np.array([_success(ctr[r], [s for s in range(k) if state.candidate[r, s]]) for r in range(n_rows)])
    return ok.reshape(len(blk.tests), reps)


def bai_curve(batch: ReplayBatch, policy: str, n_aux: float, reps: int, seed: int, budgets=BUDGETS,
              radius: str = "hoeffding") -> dict:
    n = len(batch)
    out = {b: (np.zeros((n, reps), dtype=bool), np.zeros((n, reps))) for b in budgets}
    for blk in plan_blocks(batch):
        res = _bai_block(batch, blk, policy, n_aux, reps, seed, budgets, radius)
        for b in budgets:
            out[b][0][blk.tests] = res[b][0]
            out[b][1][blk.tests] = res[b][1]
    return {b: {"success_rate": float(out[b][0].mean()), "pulls_per_test": float(out[b][1].mean()),
                "stopped_early": float((out[b][1] < b * batch.n_arms[:, None]).mean())} for b in budgets}


def ab_curve(batch: ReplayBatch, reps: int, seed: int, budgets=BUDGETS) -> dict:
    out = {}
    for b in budgets:
        ok = np.zeros((len(batch), reps), dtype=bool)
        for blk in plan_blocks(batch):
            ok[blk.tests] = _ab_block(batch, blk, b, reps, seed)
        out[b] = {"success_rate": float(ok.mean()), "pulls_per_test": float(b * batch.n_arms.mean())}
    return out


def pure_llm_success(batch: ReplayBatch) -> float:
    ok = [_success(batch.ctr[i, : batch.n_arms[i]], [int(np.argmax(batch.prior[i, : batch.n_arms[i]]))]) for i in range(len(batch))]
    return float(np.mean(ok))


def run_bai(rd, reps: int, seed: int, workers: int = 1, radius: str = "hoeffding") -> dict:
    """Tune LLM-BAI's n_aux on the tune tests (success at the largest budget), then report.

    ``radius`` is Algorithm 2's confidence radius for both BAI variants (the paper's Hoeffding,
    or the empirical Bernstein of ``lola.kernels.policies.bai_interval``).
    """
    tune_scores = {}
    for m in N_AUX_GRID:
        curve = bai_curve(rd.tune, "llm_bai", m, max(1, reps // 2), seed + 7919, budgets=(max(BUDGETS),), radius=radius)
        tune_scores[m] = curve[max(BUDGETS)]["success_rate"]
    best = max(N_AUX_GRID, key=lambda m: (tune_scores[m], -m))
    curves = {
        "LLM-BAI": bai_curve(rd.report, "llm_bai", best, reps, seed, radius=radius),
        "BAI": bai_curve(rd.report, "bai", 0.0, reps, seed, radius=radius),
        "A/B test": ab_curve(rd.report, reps, seed),
    }
    return {
        "experiment": "appendix G.1 best-arm identification",
        "good_within": GOOD_WITHIN,
        "delta": 0.2,
        "radius": radius,
        "budgets_pulls_per_headline": list(BUDGETS),
        "llm_bai_n_aux": best,
        "tune_success_by_n_aux": {str(k): v for k, v in tune_scores.items()},
        "pure_llm_success_rate": pure_llm_success(rd.report),
        "curves": {name: {str(b): v for b, v in c.items()} for name, c in curves.items()},
        "settings": dict(rd.description, reps=reps, seed=seed, prior_quality=rd.prior_quality),
    }


def markdown_bai(doc: dict) -> str:
    lines = [f"# G.1 BAI: success = all returned arms within {doc['good_within']:.3f} of the best CTR; "
             f"LLM-BAI n_aux={doc['llm_bai_n_aux']} (tuned); {doc.get('radius', 'hoeffding')} radius; "
             f"PureLLM success {doc['pure_llm_success_rate']:.3f}",
             "| pulls/headline | " + " | ".join(f"{n} success (pulls/test)" for n in doc["curves"]) + " |",
             "|---" * (len(doc["curves"]) + 1) + "|"]
    for b in doc["budgets_pulls_per_headline"]:
        cells = []
        for c in doc["curves"].values():
            v = c[str(b)]
            cells.append(f"{v['success_rate']:.3f} ({v['pulls_per_test']:.0f})")
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_bai(doc: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for name, c in doc["curves"].items():
        xs = [c[str(b)]["pulls_per_test"] for b in doc["budgets_pulls_per_headline"]]
        ys = [c[str(b)]["success_rate"] for b in doc["budgets_pulls_per_headline"]]
        ax.plot(xs, ys, marker="o", label=name)
    ax.axhline(doc["pure_llm_success_rate"], color="grey", linestyle="--", label="PureLLM (no pulls)")
    ax.set_xlabel("average pulls per test")
    ax.set_ylabel("success rate")
    ax.set_title("Appendix G.1 replay: best-arm identification")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
