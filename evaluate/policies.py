"""Target policies of ``lola evaluate``, the reward model of DR, and Li et al.'s replay.

Fixed policies (probabilities per action, the same in every round of an experiment):

* ``uniform``: 1 / K over the experiment's variants;
* ``snapshot``: a kernel policy frozen at the latest policy snapshot, its ``serving_share``
  per variant (the allocation the decisions' propensities come from);
* ``file:PATH``: a JSON allocation, ``{variant_id: weight}`` (every experiment) or
  ``{experiment_id: {variant_id: weight}}``; weights are normalised, missing variants get 0.

Reward model (DR's direct-method term): the LLM prior CTR of each variant from the latest
snapshot, so a variant the log never shows still has an estimate; a variant without a prior
gets the experiment's logged click rate. On the Open Bandit Dataset (no texts, no prior) it is
each item's click rate, cross-fitted over two folds (even and odd rows) so that no round's
own reward enters its own term.

Learning policies (``replay:POLICY``, any kernel policy name) are evaluated by the replay
method of Li, Chu, Langford and Wang (WSDM 2011): on a log of a *uniform* logging policy the
policy runs through the rounds in order, a round counts only when its choice equals the
logged action, and only those rounds update it; the mean reward over counted rounds is an
unbiased estimate of its online value. About n / K rounds count.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lola.errors import ConfigError, LolaError
from lola.stream.decision_log import Log


def _allocation_from_file(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read allocation file {path}: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"allocation file {path}: expected a non-empty JSON object")
    return data


def _row(weights: dict[str, Any], variants: list[str], what: str) -> np.ndarray:
    try:
        w = np.array([float(weights.get(v, 0.0)) for v in variants])
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: weights must be numbers") from None
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"{what}: weights must be finite, >= 0 and not all 0")
    return w / w.sum()


def policy_table(log: Log, policy: str, snapshots: dict[str, Any] | None) -> dict[str, np.ndarray]:
    """``{experiment_id: probabilities over its variants}`` of a fixed policy (module docstring)."""
    out: dict[str, np.ndarray] = {}
    data = _allocation_from_file(policy[5:]) if policy.startswith("file:") else None
    for exp, variants in log.variants.items():
        if policy == "uniform":
            out[exp] = np.full(len(variants), 1.0 / len(variants))
        elif policy == "snapshot":
            snap = (snapshots or {}).get(exp)
            if snap is None:
                raise LolaError(f"no policy snapshot of experiment {exp!r} (needed by --policy snapshot)")
            out[exp] = _row({v: a.get("serving_share", 0.0) for v, a in snap["arms"].items()}, variants,
                            f"snapshot of {exp}")
        elif data is not None:
            nested = all(isinstance(v, dict) for v in data.values())
            weights = data.get(exp) if nested else data
            if weights is None:
                raise ConfigError(f"allocation file has no entry for experiment {exp!r}")
            out[exp] = _row(weights, variants, f"allocation file, experiment {exp}")
        else:
            raise ConfigError(f"unknown policy {policy!r}: uniform, snapshot, file:PATH or replay:POLICY")
    return out


def matrix(log: Log, per_experiment: dict[str, np.ndarray]) -> np.ndarray:
    """Per-round rows [n, K_max] of per-experiment vectors (0 beyond an experiment's variants)."""
    k_max = max(len(v) for v in log.variants.values())
    rows = {e: np.pad(p, (0, k_max - len(p))) for e, p in per_experiment.items()}
    return np.stack([rows[e] for e in log.experiment])


def reward_model(log: Log, snapshots: dict[str, Any] | None, obd: bool = False) -> np.ndarray:
    """DR's reward model q [n, K_max] (module docstring)."""
    k_max = max(len(v) for v in log.variants.values())
    if obd:
        q = np.empty((log.action.shape[0], k_max))
        fold = np.arange(log.action.shape[0]) % 2
        for f in (0, 1):
            other = fold != f
            clicks = np.bincount(log.action[other], weights=log.reward[other], minlength=k_max)
            shows = np.bincount(log.action[other], minlength=k_max)
            pooled = log.reward[other].mean()
            q[fold == f] = np.where(shows > 0, clicks / np.maximum(shows, 1), pooled)
        return q
    per_exp = {}
    exps = np.array(log.experiment)
    for exp, variants in log.variants.items():
        mask = exps == exp
        fallback = float(log.reward[mask].mean()) if mask.any() else 0.0
        arms = ((snapshots or {}).get(exp) or {}).get("arms", {})
        per_exp[exp] = np.array([arms.get(v, {}).get("prior") if arms.get(v, {}).get("prior") is not None
                                 else fallback for v in variants], dtype=float)
    return matrix(log, per_exp)


def replay(log: Log, policy: str, snapshots: dict[str, Any] | None, seed: int = 0) -> dict[str, Any]:
    """Li et al.'s replay of a learning kernel policy on a uniform log (module docstring)."""
    from lola.kernels import BanditState, ExperimentParams, select, update

    try:
        params = ExperimentParams.from_dict({"policy": policy})
    except (ConfigError, TypeError, ValueError) as exc:
        raise ConfigError(f"replay:{policy}: {exc}") from None
    exps = np.array(log.experiment)
    rewards: list[float] = []
    for exp, variants in log.variants.items():
        mask = exps == exp
        k = len(variants)
        ps = log.pscore[mask]
        if not np.allclose(ps, 1.0 / k, rtol=1e-6):
            raise LolaError(f"replay needs a uniform logging policy; experiment {exp!r} logged propensities "
                            f"from {ps.min():.4g} to {ps.max():.4g}, not 1/{k} (evaluate fixed policies instead)")
        state = BanditState(capacity_experiments=1, capacity_arms=k)
        row = state.add_experiment(params)
        arms = ((snapshots or {}).get(exp) or {}).get("arms", {})
        for v in variants:
            state.add_arm(row, prior_ctr=arms.get(v, {}).get("prior"))
        rows = np.array([row], dtype=np.int64)
        for i, (a, r) in enumerate(zip(log.action[mask].tolist(), log.reward[mask].tolist())):
            slot, _ = select(state, rows, seed * 1_000_003 + i)
            if int(slot[0]) == a:
                update(state, rows, slot, np.ones(1), np.array([r]), np.zeros(1))
                rewards.append(r)
    if not rewards:
        raise LolaError("replay: no logged round matched the policy's choice")
    return {"rewards": np.array(rewards)}
