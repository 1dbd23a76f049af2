"""The numbers of ``lola report``, from the decision log and the latest policy snapshots.

"Over time" comes from the decision and outcome logs (``lola.decisions`` joined with
``lola.events`` by request id, :mod:`lola.stream.decision_log`): the snapshots topic is
compacted and keeps only the latest state. Time is the decision's ``ts``, cut into
``bins`` equal intervals; in each, the allocation is the share of joined decisions per
variant, and P(best) is computed from the cumulative impressions and clicks up to the end
of the interval (:func:`lola.stream.stats.experiment_stats`, the snapshot's own definition).
Posteriors, P(best) now, the winner and the prior's calibration come from the latest
snapshot of each experiment (the worker's full counts, not only the joined rounds).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lola.stream.decision_log import Log
from lola.stream.edge import servable
from lola.stream.stats import experiment_stats

#: Experiments drawn in the over-time figures when no --experiment is given (the busiest).
MAX_TIMELINES = 4
CALIBRATION_BINS = 8


def _n_aux(snap: dict[str, Any]) -> float:
    n = snap.get("n_aux")
    return float("inf") if n == "inf" else float(n or 0.0)


def snapshot_stats(snap: dict[str, Any]) -> dict[str, Any]:
    """Statistics of one snapshot's arms: the worker's own ``stats`` where it published them (its
    effective n_aux, none for a policy without a prior); recomputed from the counts only for a
    snapshot without them (over 64 variants, or written before issue 23)."""
    if snap.get("stats"):
        return snap["stats"]
    arms = snap["arms"]
    ids = list(arms)
    prior = np.array([arms[v]["prior"] if arms[v].get("prior") is not None else np.nan for v in ids], dtype=float)
    return experiment_stats(ids, np.array([arms[v]["impressions"] for v in ids], dtype=float),
                            np.array([arms[v]["clicks"] for v in ids], dtype=float), np.nan_to_num(prior),
                            ~np.isnan(prior), np.array([servable(arms[v]) for v in ids]),
                            _n_aux(snap))


def timeline(log: Log, experiment: str, snap: dict[str, Any] | None, bins: int) -> dict[str, Any]:
    """Allocation and P(best) (data only and with the prior) per time bin of one experiment."""
    mask = np.array([e == experiment for e in log.experiment])
    variants = log.variants[experiment]
    k = len(variants)
    ts, act, rew = log.ts[mask], log.action[mask], log.reward[mask]
    edges = np.linspace(ts.min(), ts.max() + 1e-9, bins + 1)
    which = np.clip(np.searchsorted(edges, ts, side="right") - 1, 0, bins - 1)
    arms = (snap or {}).get("arms", {})
    prior = np.array([arms.get(v, {}).get("prior") if arms.get(v, {}).get("prior") is not None else np.nan
                      for v in variants], dtype=float)
    n_aux = _n_aux(snap) if snap else 0.0
    share, p_best, p_best_prior = [], [], []
    imp = np.zeros(k)
    clk = np.zeros(k)
    for b in range(bins):
        sel = which == b
        counts = np.bincount(act[sel], minlength=k).astype(float)
        share.append((counts / counts.sum()).tolist() if counts.sum() else [0.0] * k)
        imp += counts
        clk += np.bincount(act[sel], weights=rew[sel], minlength=k)
        st = experiment_stats(variants, imp, clk, np.nan_to_num(prior), ~np.isnan(prior), np.ones(k, bool), n_aux)
        p_best.append([st["arms"][v]["p_best"] for v in variants])
        p_best_prior.append([st["arms"][v]["p_best_with_prior"] for v in variants])
    return {"experiment": experiment, "variants": variants, "t": ((edges[:-1] + edges[1:]) / 2 - edges[0]).tolist(),
            "share": share, "p_best": p_best, "p_best_with_prior": p_best_prior, "decisions": int(mask.sum())}


def calibration(snapshots: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Prior CTR against realised CTR over every arm with a prior and impressions (impression-weighted)."""
    pts = [(a["prior"], a["clicks"] / a["impressions"], a["impressions"])
           for s in snapshots.values() for a in s["arms"].values()
           if a.get("prior") is not None and a["impressions"] > 0]
    if len(pts) < 2:
        return {"arms": len(pts), "slope": None, "bins": []}
    pred, real, w = (np.array(x, dtype=float) for x in zip(*pts))
    # weighted least squares of realised on predicted: slope 1 = calibrated spread, < 1 = over-confident
    pm, rm = np.average(pred, weights=w), np.average(real, weights=w)
    var = np.average((pred - pm) ** 2, weights=w)
    slope = float(np.average((pred - pm) * (real - rm), weights=w) / var) if var > 0 else None
    order = np.argsort(pred)
    groups = [g for g in np.array_split(order, min(CALIBRATION_BINS, len(order))) if len(g)]
    bins = [{"predicted": float(np.average(pred[g], weights=w[g])), "realised": float(np.average(real[g], weights=w[g])),
             "arms": int(len(g)), "impressions": float(w[g].sum())} for g in groups]
    return {"arms": len(pts), "slope": slope, "intercept": float(rm - (slope or 0.0) * pm), "bins": bins,
            "points": [[float(p), float(r), float(x)] for p, r, x in zip(pred, real, w)]}


def summarise(log: Log | None, snapshots: dict[str, dict[str, Any]], experiment: str | None, bins: int) -> dict:
    """Everything the report shows (module docstring); ``log`` None: snapshots only."""
    if experiment is not None:
        snapshots = {k: v for k, v in snapshots.items() if k == experiment}
    experiments = {}
    for exp_id, snap in snapshots.items():
        st = snapshot_stats(snap)
        arms = st["arms"]
        moved = 0.5 * sum(abs(a["p_best_with_prior"] - a["p_best"]) for a in arms.values())
        imps = {v: snap["arms"][v]["impressions"] for v in arms}
        total = sum(imps.values())
        experiments[exp_id] = {
            "policy": snap.get("policy"), "n_aux": snap.get("n_aux"), "winner": snap.get("winner"),
            "stats": st, "impressions": total,
            "prior_traffic_moved": moved,
            "prior_share": (sum(a["prior_share"] * imps[v] for v, a in arms.items()) / total) if total else None,
        }
    out: dict[str, Any] = {"experiments": experiments, "calibration": calibration(snapshots), "timelines": [],
                           "health": log.health if log is not None else None,
                           "over_time_source": "decision and outcome logs (lola.decisions joined with lola.events)"}
    if log is not None:
        counts: dict[str, int] = {}
        for e in log.experiment:
            counts[e] = counts.get(e, 0) + 1
        chosen = [experiment] if experiment is not None else sorted(counts, key=counts.get, reverse=True)[:MAX_TIMELINES]
        out["timelines"] = [timeline(log, e, snapshots.get(e), bins) for e in chosen if e in counts]
    return out
