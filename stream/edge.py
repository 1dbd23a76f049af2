"""The snapshot's ``edge`` block: an allocation for the interval until the next snapshot.

An edge server (``lola.client.EdgeAllocator``, ``lola serve``) decides locally from the
latest snapshot of each experiment, for every request until the next snapshot. The
worker therefore publishes, per experiment::

    "edge": {"method": "hallucinate", "horizon_impressions": 212.0,
             "valid_until": 1700000030.0, "allocation": {"a": 0.97, "b": 0.03},
             "fallback": {"a": 0.5, "b": 0.5}}

* ``allocation``: :func:`lola.kernels.edge.edge_allocation` for ``horizon_impressions``
  decisions: the experiment's impressions per second over the last snapshot interval
  (its first snapshot: :data:`DEFAULT_HORIZON`) times ``LOLA_SNAPSHOT_INTERVAL_S``,
  within [1, :data:`MAX_HORIZON`];
* ``valid_until``: the snapshot's ``ts`` plus ``LOLA_EDGE_VALID_S``; after it (the worker
  is down or partitioned away) the edge serves ``fallback`` and counts each such decision;
* ``fallback``, the safe allocation: an even split over the servable variants (every
  variant keeps a positive propensity, so off-policy evaluation still works, and no
  stale winner is pushed); for a ``stopped`` experiment the variant the worker serves only.

Only servable variants get traffic (:func:`servable`): state ``active`` (a missing
``state`` is ``active`` when the arm's ``active`` flag is true, else ``retired``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lola.kernels import BanditState
from lola.kernels.edge import EDGE_STEPS, edge_allocation

#: Design horizon of an experiment's first snapshot (no rate measured yet), in decisions.
DEFAULT_HORIZON = 100.0
#: Upper bound of the design horizon, in decisions.
MAX_HORIZON = 1e6


def arm_state(arm: dict[str, Any]) -> str:
    """A snapshot arm's lifecycle state; before the ``state`` field existed, from ``active``."""
    state = arm.get("state")
    if state is None:
        return "active" if arm.get("active") else "retired"
    return str(state)


def servable(arm: dict[str, Any]) -> bool:
    """Whether a snapshot arm may be served: state ``active`` only (never pending/blocked/retired)."""
    return arm_state(arm) == "active"


class EdgePlanner:
    """Computes the ``edge`` block; remembers each experiment's last (ts, impressions) for its rate."""

    def __init__(self, method: str, interval_s: float, valid_s: float) -> None:
        self.method = method
        self.interval_s = float(interval_s)
        self.valid_s = float(valid_s)
        self._last: dict[str, tuple[float, float]] = {}
        self._scratch = None

    def horizon(self, experiment_id: str, now: float, impressions: float) -> float:
        last = self._last.get(experiment_id)
        self._last[experiment_id] = (now, impressions)
        if last is None or now <= last[0]:
            return DEFAULT_HORIZON
        rate = max(impressions - last[1], 0.0) / (now - last[0])
        return float(min(max(rate * self.interval_s, 1.0), MAX_HORIZON))

    def forget(self, experiment_id: str) -> None:
        """Drop an evicted experiment's last (ts, impressions)."""
        self._last.pop(experiment_id, None)

    def right_size(self) -> None:
        """Rebuild the rate memory at its size (after many evictions: a dict never shrinks)."""
        self._last = dict(self._last)

    def block(self, state: Any, row: int, variant_ids: list[str], snap: dict[str, Any],
              best: str | None = None) -> dict[str, Any]:
        arms = snap["arms"]
        ok = np.array([servable(arms[v]) for v in variant_ids], dtype=bool)
        steps = float(sum(arms[v]["impressions"] for v in variant_ids))
        h = self.horizon(snap["experiment_id"], float(snap["ts"]), steps)
        if self._scratch is None or self._scratch.capacity_arms != state.capacity_arms:
            self._scratch = BanditState(1, state.capacity_arms, state.feature_dim)
        p = edge_allocation(state, row, h, self.method, self._scratch, EDGE_STEPS) * ok
        n_ok = int(ok.sum())
        fallback = ok / n_ok if n_ok else ok.astype(float)
        if snap.get("status") == "stopped" and best is not None:
            # stopped: the one variant the worker serves (lifecycle.best_variant), nothing else
            p = np.array([1.0 if v == best else 0.0 for v in variant_ids])
            fallback = p
        total = float(p.sum())
        p = p / total if total > 0 else fallback  # nothing servable left by the policy: the safe split
        return {"method": self.method, "horizon_impressions": h, "valid_until": float(snap["ts"]) + self.valid_s,
                "allocation": {v: float(x) for v, x in zip(variant_ids, p) if x > 0},
                "fallback": {v: float(x) for v, x in zip(variant_ids, fallback) if x > 0}}
