"""Snapshot statistics and the winner rule: the ``stats`` and ``winner`` parts of a policy snapshot.

Per arm (see :mod:`lola.kernels.stats` for the posteriors): the data-only Beta(1, 1)
posterior and the one with the prior as ``n_aux`` pseudo-impressions, each with its mean and
95 % equal-tailed credible interval; ``p_best`` / ``p_best_with_prior`` and
``expected_loss`` / ``expected_loss_with_prior`` by quadrature; ``prior_share`` =
n_aux / (n + n_aux), the prior's weight in the arm's index (0 without a prior, 1 for
``n_aux = inf``).

Cost control (:class:`StatsCache`): an experiment's statistics are recomputed only when
its ``policy_version`` changed since the last computation **and** at least
``stats_interval_s`` passed; in between, snapshots carry the last ones, stamped with the
version and time they were computed for (``as_of_version``, ``computed_at``).

Winner rule (:class:`WinnerRule`), on the **data-only** posterior: among the active arms, the
one with the largest ``p_best`` is declared when every active arm has at least
``min_impressions``, its ``p_best >= p_best`` threshold and its expected loss is at most
``max_loss`` x its posterior mean (relative: a 0.25 % default, whatever the CTR scale); or
when a BAI policy is done with a single recommendation (rule ``bai``). The prior never
declares a winner: the with-prior numbers are reported, never used by the rule. A
declared winner sticks for the life of the shard processor (``ts`` and ``policy_version``
say when); it is not checkpointed, so a restarted worker declares it again when the rule
next holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import betaincinv

from lola.errors import ConfigError
from lola.kernels.stats import experiment_posteriors

CI_LEVEL = 0.95
#: Experiments with more variants get no ``stats`` or ``winner`` in their snapshots: the quadrature
#: costs O(K^3) (3 ms per experiment at K = 64 measured, about an hour at K = 7,000; docs/operations/limits.md).
STATS_MAX_ARMS = 64


@dataclass(frozen=True)
class WinnerRule:
    """Thresholds of the winner rule (module docstring); the defaults pass the A/A check
    (tests/stream/test_stats.py: identical arms, a winner in <= 5 % of seeded runs)."""

    p_best: float = 0.999
    max_loss: float = 0.0025
    min_impressions: float = 1000.0

    def __post_init__(self) -> None:
        if not 0.5 < self.p_best < 1.0:
            raise ConfigError(f"winner p_best threshold must be in (0.5, 1), got {self.p_best}")
        if not self.max_loss > 0:
            raise ConfigError(f"winner max_loss must be > 0, got {self.max_loss}")
        if not self.min_impressions >= 0:
            raise ConfigError(f"winner min_impressions must be >= 0, got {self.min_impressions}")


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _prob(x: float) -> float:
    return min(max(float(x), 0.0), 1.0)  # the quadrature's rounding (1e-17) never leaves [0, 1]


def _posterior(a: float, b: float, mu: float, lo: float, hi: float) -> dict[str, Any]:
    if a < 0:  # point mass at the prior (n_aux = inf)
        return {"alpha": None, "beta": None, "mean": float(mu), "ci": [float(mu), float(mu)]}
    return {"alpha": float(a), "beta": float(b), "mean": float(a / (a + b)), "ci": [float(lo), float(hi)]}


def experiment_stats(variant_ids: list[str], impressions: np.ndarray, clicks: np.ndarray, mu: np.ndarray,
                     has_prior: np.ndarray, active: np.ndarray, n_aux: float | None) -> dict[str, Any]:
    """The ``stats`` part of a snapshot (without its stamps) from one experiment's arrays."""
    n_aux = 0.0 if n_aux is None else float(n_aux)
    post = experiment_posteriors(impressions, clicks, mu, has_prior, active, n_aux)
    a, b = post["a"], post["b"]
    tail = (1.0 - CI_LEVEL) / 2.0
    ok = a > 0
    lo = np.where(ok, betaincinv(np.where(ok, a, 1.0), np.where(ok, b, 1.0), tail), np.nan)
    hi = np.where(ok, betaincinv(np.where(ok, a, 1.0), np.where(ok, b, 1.0), 1.0 - tail), np.nan)
    arms = {}
    for k, vid in enumerate(variant_ids):
        n = float(impressions[k])
        share = (1.0 if math.isinf(n_aux) else n_aux / (n + n_aux) if n + n_aux > 0 else 0.0) if has_prior[k] else 0.0
        arms[vid] = {
            "posterior": _posterior(a[0, k], b[0, k], mu[k], lo[0, k], hi[0, k]),
            "posterior_with_prior": _posterior(a[1, k], b[1, k], mu[k], lo[1, k], hi[1, k]),
            "p_best": _prob(post["p_best"][0, k]), "p_best_with_prior": _prob(post["p_best"][1, k]),
            "expected_loss": _num(post["loss"][0, k]), "expected_loss_with_prior": _num(post["loss"][1, k]),
            "prior_share": share,
        }
    return {"ci_level": CI_LEVEL, "arms": arms}


def decide_winner(rule: WinnerRule, stats: dict[str, Any], impressions: dict[str, float],
                  active: dict[str, bool], bai: dict[str, Any] | None) -> tuple[str, str] | None:
    """``(variant_id, rule name)`` if the rule declares a winner now, else None (module docstring)."""
    if bai is not None and bai.get("done") and len(bai.get("recommendation", ())) == 1:
        return bai["recommendation"][0], "bai"
    live = [v for v, on in active.items() if on]
    if len(live) < 2 or any(impressions[v] < rule.min_impressions for v in live):
        return None
    arms = stats["arms"]
    best = max(live, key=lambda v: arms[v]["p_best"])
    arm = arms[best]
    loss = arm["expected_loss"]
    if arm["p_best"] >= rule.p_best and loss is not None and loss <= rule.max_loss * arm["posterior"]["mean"]:
        return best, "p_best_and_expected_loss"
    return None


class StatsCache:
    """Per-experiment statistics recomputed only on change and at most every ``interval_s``."""

    def __init__(self, interval_s: float, rule: WinnerRule | None = None) -> None:
        self.interval_s = float(interval_s)
        self.rule = rule or WinnerRule()
        self._stats: dict[str, dict[str, Any]] = {}
        self._winners: dict[str, dict[str, Any]] = {}
        self.computed = 0

    def get(self, experiment_id: str, version: int, now: float, compute: Any) -> dict[str, Any]:
        """The cached statistics, or ``compute()`` stamped with ``version`` and ``now``."""
        old = self._stats.get(experiment_id)
        if old is not None and (old["as_of_version"] == version or now - old["computed_at"] < self.interval_s):
            return old
        fresh = {"as_of_version": version, "computed_at": now, **compute()}
        self._stats[experiment_id] = fresh
        self.computed += 1
        return fresh

    def forget(self, experiment_id: str) -> None:
        """Drop an evicted experiment's cached statistics and winner (a re-created id starts over)."""
        self._stats.pop(experiment_id, None)
        self._winners.pop(experiment_id, None)

    def right_size(self) -> None:
        """Rebuild the caches at their size (after many evictions: a dict never shrinks)."""
        self._stats, self._winners = dict(self._stats), dict(self._winners)

    def winner(self, experiment_id: str, version: int, now: float, stats: dict[str, Any],
               impressions: dict[str, float], active: dict[str, bool], bai: dict[str, Any] | None) -> dict[str, Any] | None:
        """The declared winner (sticky once declared), checked against the current statistics."""
        won = self._winners.get(experiment_id)
        if won is None:
            got = decide_winner(self.rule, stats, impressions, active, bai)
            if got is not None:
                arm = stats["arms"][got[0]]
                won = self._winners[experiment_id] = {
                    "variant_id": got[0], "rule": got[1], "p_best": arm["p_best"],
                    "expected_loss": arm["expected_loss"], "ts": now, "policy_version": version}
        return won

    def extras(self, state: Any, exp: Any, summary: dict[str, Any], bai: dict[str, Any] | None,
               uses_prior: bool, now: float) -> dict[str, Any]:
        """``{"stats": ..., "winner": ...}`` (no ``winner`` until one is declared; nothing above
        :data:`STATS_MAX_ARMS` variants) for one experiment of a shard (ShardProcessor.snapshot)."""
        row, k = exp.row, len(exp.variant_ids)
        if k > STATS_MAX_ARMS:
            return {}
        n_aux = summary.get("n_aux_effective", summary.get("n_aux")) if uses_prior else 0.0
        n_aux = math.inf if n_aux == "inf" else float(n_aux or 0.0)
        imp = state.impressions[row, :k].copy()
        act = state.active[row, :k].copy()
        stats = self.get(exp.experiment_id, exp.version, now, lambda: experiment_stats(
            exp.variant_ids, imp, state.clicks[row, :k].copy(), state.mu_aux[row, :k].copy(),
            state.has_prior[row, :k].copy(), act, n_aux))
        impressions = dict(zip(exp.variant_ids, imp.tolist()))
        active = dict(zip(exp.variant_ids, act.tolist()))
        won = self.winner(exp.experiment_id, exp.version, now, stats, impressions, active, bai)
        return {"stats": stats} if won is None else {"stats": stats, "winner": won}  # absent until declared
