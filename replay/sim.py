"""The replay's only contact with the policy code: build a ``lola.kernels.BanditState``
for a block of tests and run ``lola.kernels`` ``simulate`` on it.

``simulate`` is the kernels' fused select+update loop; it calls the very same
``decide``/``apply_update`` functions as the worker's ``select``/``update``, so
nothing in this module decides an allocation.

Layout and common random numbers
--------------------------------
Tests are grouped by their number of arms K (one ``simulate`` call runs every row
for the same number of steps, T = tau * K), sorted by test id, and cut into
blocks of at most :data:`BLOCK` tests. A block's state holds ``tests x reps``
experiment rows; its seed depends only on (master seed, tau, K, block index).
Inside ``simulate`` row ``r`` uses decision keys ``r*T .. (r+1)*T - 1``, so a
given (test, rep) sees the same uniforms (including the click draws) under
every policy and grid point: common random numbers, independent of the number
of worker threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from lola.errors import ConfigError
from lola.kernels import BanditState, ExperimentParams, simulate
from lola.kernels.policy_table import TABLE
from lola.replay.protocol import PolicySpec, ReplayBatch

BLOCK = 48


@dataclass(frozen=True)
class Block:
    k: int
    index: int  # block index within its K group
    tests: np.ndarray  # indices into the batch


def plan_blocks(batch: ReplayBatch, block: int = BLOCK) -> list[Block]:
    """Deterministic blocks: by K, then test id, ``block`` tests each."""
    out = []
    order = sorted(range(len(batch)), key=lambda i: (int(batch.n_arms[i]), batch.test_ids[i]))
    by_k: dict[int, list[int]] = {}
    for i in order:
        by_k.setdefault(int(batch.n_arms[i]), []).append(i)
    for k, idx in sorted(by_k.items()):
        for b, start in enumerate(range(0, len(idx), block)):
            out.append(Block(k, b, np.array(idx[start : start + block], dtype=np.int64)))
    # Biggest work first so two threads finish together.
    out.sort(key=lambda bl: -(bl.k * len(bl.tests)))
    return out


def block_seed(seed: int, tau: int, k: int, index: int) -> int:
    ss = np.random.SeedSequence([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, int(tau), int(k), int(index)])
    return int(ss.generate_state(1, np.uint64)[0])


def kernel_params(spec: PolicySpec, horizon: int):
    """ExperimentParams of a replay policy (E&C needs its horizon)."""
    params = dict(spec.params)
    return ExperimentParams.from_dict({"policy": spec.kernel_policy, "horizon": int(horizon), **params})


def _compressed_warm_start(A0: np.ndarray, b0: np.ndarray, ridge: float):
    """Rows (X, r) with X'X = A0 and X'r = b0, d rows only, so ``warm_start_linear``
    (A = ridge I + X'X, b = X'r) gets the train-split statistics cheaply."""
    w, V = np.linalg.eigh(A0)
    w = np.clip(w, 1e-12, None)
    X = (V * np.sqrt(w)).T  # X'X = V diag(w) V'
    r = np.linalg.solve(X.T, b0)
    return np.ascontiguousarray(X), np.ascontiguousarray(r)


def run_block(batch: ReplayBatch, spec: PolicySpec, tau: int, reps: int, seed: int, blk: Block) -> np.ndarray:
    """Total clicks float64[len(blk.tests), reps] for one block."""
    k = blk.k
    steps = int(tau) * k
    params = kernel_params(spec, steps)
    linear = TABLE[spec.kernel_policy].needs_features
    d = batch.features.shape[2] if (linear and batch.features is not None) else 0
    if linear and d == 0:
        raise ConfigError(f"{spec.name} needs arm features")
    n_rows = len(blk.tests) * reps
    state = BanditState(capacity_experiments=n_rows, capacity_arms=k, feature_dim=d)
    ctr = np.zeros((n_rows, k))
    warm = None
    if linear and batch.linucb_A0 is not None:
        warm = _compressed_warm_start(batch.linucb_A0, batch.linucb_b0, params.ridge)
    use_prior = TABLE[spec.kernel_policy].uses_prior
    for t_i, test in enumerate(blk.tests):
        for r in range(reps):
            row = state.add_experiment(params)
            for slot in range(k):
                state.add_arm(
                    row,
                    prior_ctr=float(batch.prior[test, slot]) if use_prior else None,
                    features=batch.features[test, slot] if d else None,
                )
            if warm is not None:
                state.warm_start_linear(row, *warm)
            ctr[row] = batch.ctr[test, :k]
    rows = np.arange(n_rows, dtype=np.int64)
    simulate(state, rows, steps, ctr, block_seed(seed, tau, k, blk.index))
    per_row = state.clicks[:n_rows, :k].sum(axis=1)
    # Rows were added test-major: row = t_i * reps + r.
    return per_row.reshape(len(blk.tests), reps)


def simulate_batch(batch: ReplayBatch, spec: PolicySpec, tau: int, reps: int, seed: int, workers: int = 1) -> np.ndarray:
    """Total clicks of every test in every rep, float64[n_tests, reps] (batch order)."""
    blocks = plan_blocks(batch)
    out = np.empty((len(batch), reps))

    def job(blk: Block) -> None:
        out[blk.tests] = run_block(batch, spec, tau, reps, seed, blk)

    if workers <= 1 or len(blocks) == 1:
        for blk in blocks:
            job(blk)
    else:
        # The kernels are compiled nogil: threads share both cores without pickling.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for f in [pool.submit(job, blk) for blk in blocks]:
                f.result()
    return out
