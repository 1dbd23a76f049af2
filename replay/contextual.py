"""``lola replay contextual``: a seeded semi-synthetic contextual benchmark on the Upworthy tests.

Specified by issue 24 so that it cannot be tuned:

* 4 user segments of equal share; for each (test, segment, headline) a factor drawn
  uniformly from [0.7, 1.3] multiplies the headline's archive CTR (capped at 1);
* each request's context carries ``segment`` (categorical) and 8 standard-normal noise
  fields, featurized by the worker's own :class:`lola.stream.context.Featurizer`;
* tune on the tune tests, report on the test tests; common random numbers across
  policies (the same factors, segment and noise sequences and seeds for every policy);
* report each policy's clicks as a fraction of the per-segment oracle (expected clicks of
  always serving each segment its best headline) and against the best context-free policy
  (the one of LOLA, UCB, TS with most tune clicks), with a paired 95 % confidence interval
  across report tests, at tau = 50, 200 and 1000 (T = tau K per test).

Context-free policies run through :func:`lola.kernels.simulate` on each headline's
segment-averaged CTR (what a policy that ignores the segment faces: with equal shares its
click probability is exactly that mean); contextual ones through
:meth:`ContextualState.simulate` with the per-segment CTRs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lola.errors import ConfigError
from lola.kernels.contextual_state import ContextualParams, ContextualState
from lola.replay import protocol as P
from lola.replay.run import Z_COLUMNS, ReplayData, simulate_clicks, tune_policy
from lola.stream.context import FeatureSpec, Featurizer, NumericField
from lola.stream.contextual_shard import arm_features
from lola.stream.features import model_features

SEGMENTS = ("seg0", "seg1", "seg2", "seg3")  # hash to 4 distinct slots at user_dim 16 (checked in the JSON)
NOISE_FIELDS = 8
FACTOR_RANGE = (0.7, 1.3)
USER_DIM = 16   # intercept + 8 noise fields + 7 hash slots for the segment
ARM_DIM = 4
TAUS = (50, 200, 1000)
SPEC = FeatureSpec(numeric={f"noise_{j}": NumericField() for j in range(NOISE_FIELDS)}, categorical=["segment"])
CONTEXT_FREE = ("LOLA", "UCB", "TS")
#: Contextual policies and their grids (tuned per tau on the tune tests).
LINUCB_ALPHA = (0.001, 0.003, 0.01, 0.03, 0.1)
FALCON_GAMMA_SCALE = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
N_AUX = (30.0, 100.0, 1000.0)
RIDGE = (1.0, 100.0)
CONTEXTUAL = {
    "LLM-LinUCB": [{"algorithm": "linucb", "alpha": a, "n_aux": m, "ridge": r}
                   for a in LINUCB_ALPHA for m in N_AUX for r in RIDGE],
    "LinUCB": [{"algorithm": "linucb", "alpha": a, "n_aux": 0.0, "ridge": r} for a in LINUCB_ALPHA for r in RIDGE],
    "LLM-FALCON": [{"algorithm": "falcon", "gamma_scale": g, "n_aux": m, "ridge": r}
                   for g in FALCON_GAMMA_SCALE for m in N_AUX for r in RIDGE],
    "FALCON": [{"algorithm": "falcon", "gamma_scale": g, "n_aux": 0.0, "ridge": r}
               for g in FALCON_GAMMA_SCALE for r in RIDGE],
}
CHUNK_DECISIONS = 400_000
#: Reference row: LOLA (its tuned setting) run separately on each segment's traffic, tau/4 per
#: headline each: what knowing the segment is worth to a learner that must still learn it.
SEGMENT_LOLA = "LOLA per segment"


@dataclass
class World:
    """Per-segment CTRs ``ctr_seg[n, S, K]`` and the segment-averaged ``ctr[n, K]`` of a batch."""

    batch: P.ReplayBatch
    ctr_seg: np.ndarray
    oracle: np.ndarray  # expected clicks per decision of the per-segment oracle, float64[n]
    arm_x: np.ndarray | None = None  # arm rows float64[n, K, ARM_DIM] ("model"); None: dummy-coded slots

    def marginal(self) -> P.ReplayBatch:
        b = self.batch
        return P.ReplayBatch(b.test_ids, b.n_arms, self.ctr_seg.mean(axis=1), b.prior)


def segment_batch(world: World, s: int) -> P.ReplayBatch:
    """The batch as segment ``s`` alone sees it (its CTRs)."""
    b = world.batch
    return P.ReplayBatch(b.test_ids, b.n_arms, np.ascontiguousarray(world.ctr_seg[:, s, :]), b.prior)


def make_world(batch: P.ReplayBatch, seed: int) -> World:
    rng = np.random.default_rng([seed, 24])
    factors = rng.uniform(*FACTOR_RANGE, size=(len(batch), len(SEGMENTS), batch.ctr.shape[1]))
    ctr_seg = np.minimum(batch.ctr[:, None, :] * factors, 1.0)
    mask = np.arange(batch.ctr.shape[1])[None, :] < batch.n_arms[:, None]
    ctr_seg = np.where(mask[:, None, :], ctr_seg, 0.0)
    return World(batch, ctr_seg, ctr_seg.max(axis=2).mean(axis=1))


def model_arm_rows(batch: P.ReplayBatch) -> np.ndarray:
    """``arm_features: "model"`` rows of every (test, arm): :func:`lola.stream.features.model_features`
    of the reduced text the LinUCB replay computed (``lola.export.projection`` of the model's
    embedding with ``--model``, TF-IDF SVD with ``--priors``), as the worker builds them."""
    if batch.features is None:
        raise ConfigError("arm features 'model' need the replay's reduced text features (load with want_features)")
    z = batch.features[:, :, Z_COLUMNS]
    out = np.zeros((len(batch), z.shape[1], ARM_DIM))
    for i, k in zip(*np.nonzero(np.arange(z.shape[1])[None, :] < batch.n_arms[:, None])):
        out[i, k] = model_features(z[i, k], ARM_DIM)
    return out


def segment_vectors(featurizer: Featurizer) -> np.ndarray:
    """u of each segment with no noise fields (intercept + the segment's hash slot)."""
    return np.stack([featurizer({"segment": s}) for s in SEGMENTS])


def contextual_clicks(world: World, params: dict, tau: int, seed: int, rep: int) -> np.ndarray:
    """Total clicks per test of one contextual policy, float64[n] (common random numbers per (test, rep))."""
    batch = world.batch
    feat = Featurizer(SPEC, USER_DIM)
    seg_u = segment_vectors(feat)
    n = len(batch)
    kmax = int(batch.n_arms.max())
    state = ContextualState(ARM_DIM, USER_DIM, capacity_experiments=n, capacity_arms=kmax)
    cp = ContextualParams(**params)
    for i in range(n):
        row = state.add_experiment(cp)
        for k in range(int(batch.n_arms[i])):
            a = arm_features("slot", k, "", ARM_DIM) if world.arm_x is None else world.arm_x[i, k]
            state.add_arm(row, a,
                          prior_ctr=float(batch.prior[i, k]) if cp.n_aux > 0 else None)
    clicks = np.zeros(n)
    start = 0
    while start < n:  # chunks of tests, so the per-decision arrays stay small
        stop, total = start, 0
        while stop < n and (stop == start or total + tau * int(batch.n_arms[stop]) <= CHUNK_DECISIONS):
            total += tau * int(batch.n_arms[stop])
            stop += 1
        rows, segs, users = [], [], []
        for i in range(start, stop):
            T = tau * int(batch.n_arms[i])
            rng = np.random.default_rng([seed, tau, rep, i])  # the same for every policy
            seg = rng.integers(0, len(SEGMENTS), T)
            u = seg_u[seg].copy()
            u[:, 1:1 + NOISE_FIELDS] = feat.numeric_block(rng.standard_normal((T, NOISE_FIELDS)))
            rows.append(np.full(T, i, dtype=np.int64))
            segs.append(seg)
            users.append(u)
        r = np.concatenate(rows)
        _, _, c = state.simulate(r, np.concatenate(users), np.concatenate(segs), world.ctr_seg,
                                 seed=int(np.random.SeedSequence([seed, tau, rep, start]).generate_state(1)[0]))
        clicks += np.bincount(r, weights=c, minlength=n)
        start = stop
    return clicks


def _mean_clicks(world: World, params: dict, tau: int, reps: int, seed: int) -> np.ndarray:
    return np.mean([contextual_clicks(world, params, tau, seed, rep) for rep in range(reps)], axis=0)


def paired_ci(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean of a - b across tests with its two-sided 95 % t interval (and in % of mean b)."""
    from scipy import stats

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("inf")
    base = float(np.mean(b))
    return {"diff": float(d.mean()), "ci95": [float(d.mean() - half), float(d.mean() + half)],
            "pct": 100.0 * float(d.mean()) / base if base > 0 else float("nan"),
            "pct_ci95": [100.0 * (float(d.mean()) - half) / base, 100.0 * (float(d.mean()) + half) / base]
            if base > 0 else None, "tests": n}


def run_contextual_replay(rd: ReplayData, taus: Sequence[int] = TAUS, reps: int = 3, tune_reps: int = 1,
                          seed: int = 20240501, workers: int = 1, policies: Sequence[str] = tuple(CONTEXTUAL),
                          progress: Any = None, arm_mode: str = "slot") -> dict[str, Any]:
    """``arm_mode``: ``slot`` (dummy-coded, the default) or ``model`` (:func:`model_arm_rows`)."""
    if arm_mode not in ("slot", "model"):
        raise ConfigError(f"arm features must be slot or model, got {arm_mode!r}")
    t0 = time.perf_counter()
    tune_w, report_w = make_world(rd.tune, seed), make_world(rd.report, seed + 1)
    if arm_mode == "model":
        tune_w.arm_x, report_w.arm_x = model_arm_rows(rd.tune), model_arm_rows(rd.report)
    feat = Featurizer(SPEC, USER_DIM)
    seg_u = segment_vectors(feat)
    distinct = len({tuple(v) for v in seg_u}) == len(SEGMENTS)
    out: dict[str, Any] = {
        "benchmark": {"segments": list(SEGMENTS), "segment_share": 1 / len(SEGMENTS), "factor_range": FACTOR_RANGE,
                      "noise_fields": NOISE_FIELDS, "user_dim": USER_DIM, "arm_dim": ARM_DIM,
                      "d": USER_DIM * ARM_DIM, "arm_features": "slot (dummy-coded)" if arm_mode == "slot" else
                      f"model: [1, first {ARM_DIM - 1} of {rd.description.get('linucb_features')}]",
                      "segments_hash_to_distinct_features": distinct, "reps": reps, "tune_reps": tune_reps,
                      "seed": seed, "taus": list(taus)},
        "data": rd.description, "per_tau": {}}
    for tau in taus:
        entry: dict[str, Any] = {"tuned": {}, "report": {}}
        # context-free: tuned on the tune tests' segment-averaged CTRs; the best one is the reference
        cf_tune, cf_report = {}, {}
        for name in CONTEXT_FREE:
            rec = tune_policy(tune_w.marginal(), name, tau, tune_reps, seed, workers)
            cf_tune[name] = max(v for _, v in rec.grid_scores)
            cf_report[name] = simulate_clicks(report_w.marginal(), rec.best, tau, reps, seed + 7, workers).mean(axis=1)
            entry["tuned"][name] = rec.best.as_dict()
            if progress:
                progress(1)
        best_cf = max(cf_tune, key=cf_tune.get)
        oracle = report_w.oracle * tau * report_w.batch.n_arms
        scores = dict(cf_report)
        if tau >= len(SEGMENTS):  # reference: LOLA run separately per segment (knows the segment, no noise)
            spec = P.PolicySpec("LOLA", entry["tuned"]["LOLA"])
            scores[SEGMENT_LOLA] = sum(simulate_clicks(segment_batch(report_w, s), spec, tau // len(SEGMENTS), reps,
                                                       seed + 11 + s, workers).mean(axis=1)
                                       for s in range(len(SEGMENTS))) * (tau / (tau // len(SEGMENTS) * len(SEGMENTS)))
        for name in policies:
            grid_scores = [float(_mean_clicks(tune_w, p, tau, tune_reps, seed).mean()) for p in CONTEXTUAL[name]]
            best = CONTEXTUAL[name][int(np.argmax(grid_scores))]
            entry["tuned"][name] = best
            scores[name] = _mean_clicks(report_w, best, tau, reps, seed + 7)
            if progress:
                progress(1)
        for name, clicks in scores.items():
            row = {"clicks_per_period": float(clicks.mean() / tau),
                   "fraction_of_oracle": float(clicks.sum() / oracle.sum())}
            if name not in CONTEXT_FREE:  # contextual policies and the per-segment reference
                row["vs_best_context_free"] = paired_ci(clicks / tau, scores[best_cf] / tau)
            entry["report"][name] = row
        for llm, plain in (("LLM-LinUCB", "LinUCB"), ("LLM-FALCON", "FALCON")):
            if llm in scores and plain in scores:
                entry["report"][llm]["vs_" + plain] = paired_ci(scores[llm] / tau, scores[plain] / tau)
        entry["best_context_free"] = best_cf
        out["per_tau"][str(tau)] = entry
    out["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return out
