"""Struct-of-arrays bandit state for many experiments x arms, with growing capacity.

Layout (``E`` = experiment capacity, ``K`` = arm capacity, ``d`` = feature dim):

* per arm, ``[E, K]``: ``impressions``, ``clicks``, ``conversions`` (float64, discounted
  when gamma < 1; these are the *observed* counts, Algorithm 1's ``n = 1 + impressions``
  is applied inside the kernel), ``mu_aux`` (prior CTR), ``has_prior``, ``active`` and
  ``candidate`` (bool: BAI candidate set / E&C committed set);
* per experiment: ``exp_f[E, N_EXP_F]`` (float64 parameters plus the clocks ``t`` and
  ``steps``; one row = everything a decision reads about its experiment, three cache
  lines), ``policy``, ``n_arms`` (int64), ``bai_done``, ``ec_committed`` (bool);
* LinUCB, only when ``d > 0``: ``features[E, K, d]`` (arm text embeddings),
  ``ainv[E, d, d]`` (A^-1, kept by Sherman-Morrison), ``bvec[E, d]`` and the cache
  ``z[E, K, d] = A^-1 x_k``.

Named views ``alpha``, ``n_aux``, ``gamma``, ``t`` ... return the matching column of
``exp_f`` for the used rows.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np

from lola.errors import CapacityError, ConfigError, KernelInputError
from lola.kernels import core, policies, rng
from lola.kernels.adaptive import adaptive_n_aux
from lola.kernels.compaction import SERIALISED, CompactionMixin, params_from_json, params_to_json
from lola.kernels.params import POLICIES, ExperimentParams
from lola.kernels.policy_table import TABLE, family

FORMAT_VERSION = 3
# Width of ``exp_f`` in each readable format: version 1 predates F_BAI_BERNSTEIN, the one
# column version 2 appended; its 0.0 (Hoeffding) is what version 1 always did. Version 3
# appended F_TS_REFRESH and F_TS_REF and the TS rows of ``ucb`` (4 -> N_UCB rows): an older
# blob gets its experiments' ts_refresh and no TS reference (refreshed at the next decision).
_EXP_F_WIDTH = {1: core.F_BAI_BERNSTEIN, 2: core.F_TS_REFRESH, 3: core.N_EXP_F}
_UCB_ROWS = {1: 4, 2: 4, 3: core.N_UCB}
_MAGIC = "lola.kernels.BanditState"

_ARM_F64 = ("impressions", "clicks", "conversions", "mu_aux")
_ARM_BOOL = ("has_prior", "active", "candidate")
_MAX_EXPERIMENTS = 1 << 31
_MAX_ARMS = 1 << 16


def _check_prior(prior_ctr: Any) -> float:
    if isinstance(prior_ctr, bool):
        raise KernelInputError(f"prior_ctr must be a number in [0, 1], got {prior_ctr!r}")
    try:
        value = float(prior_ctr)
    except (TypeError, ValueError):
        raise KernelInputError(f"prior_ctr must be a number in [0, 1], got {prior_ctr!r}") from None
    if not (0.0 <= value <= 1.0):
        raise KernelInputError(f"prior_ctr must be a finite number in [0, 1], got {prior_ctr!r}")
    return value


class BanditState(CompactionMixin):
    """All experiments' statistics and parameters, as struct-of-arrays for the kernels.

    Parameters
    ----------
    capacity_experiments, capacity_arms : int
        Initial capacity; both double on demand (``add_experiment``/``add_arm``).
    feature_dim : int
        Arm feature (text embedding) dimension for LinUCB policies; 0 if unused.
    """

    def __init__(self, capacity_experiments: int = 1024, capacity_arms: int = 4, feature_dim: int = 0) -> None:
        for name, v, lo in (("capacity_experiments", capacity_experiments, 1), ("capacity_arms", capacity_arms, 1),
                            ("feature_dim", feature_dim, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
        self.feature_dim = int(feature_dim)
        self._n = 0
        self._params: list[ExperimentParams] = []
        E, K, d = int(capacity_experiments), int(capacity_arms), self.feature_dim
        self.impressions = np.zeros((E, K))
        self.clicks = np.zeros((E, K))
        self.conversions = np.zeros((E, K))
        self.mu_aux = np.zeros((E, K))
        self.has_prior = np.zeros((E, K), dtype=np.bool_)
        self.active = np.zeros((E, K), dtype=np.bool_)
        self.candidate = np.zeros((E, K), dtype=np.bool_)
        self.ucb = np.zeros((E, core.N_UCB, K))
        self.exp_f = np.zeros((E, core.N_EXP_F))
        self.policy = np.zeros(E, dtype=np.int64)
        self.n_arms = np.zeros(E, dtype=np.int64)
        self.bai_done = np.zeros(E, dtype=np.bool_)
        self.ec_committed = np.zeros(E, dtype=np.bool_)
        self.features = np.zeros((E, K, d))
        self.z = np.zeros((E, K, d))
        self.ainv = np.zeros((E, d, d))
        self.bvec = np.zeros((E, d))
        # Allocation cache (not serialised): ``alloc[e]`` is core.allocation_row's value for
        # state version ``alloc_stamp[e]``; ``stamp[e]`` advances on every change of row e.
        self.stamp = np.zeros(E, dtype=np.int64)
        self.alloc_stamp = np.full(E, -1, dtype=np.int64)
        self.alloc = np.zeros((E, K))
        #: TS allocation quadratures run by ``select`` and ``simulate`` (one per experiment and
        #: reference posterior that a decision needed a propensity from): a gauge, not serialised.
        self.ts_quadratures = 0

    # ------------------------------------------------------------------ capacity
    @property
    def n_experiments(self) -> int:
        """Rows in use (experiment rows are ``0 .. n_experiments - 1``)."""
        return self._n

    @property
    def capacity_experiments(self) -> int:
        return self.impressions.shape[0]

    @property
    def capacity_arms(self) -> int:
        return self.impressions.shape[1]

    def _grow(self, experiments: int, arms: int) -> None:
        E0, K0 = self.impressions.shape
        E, K = max(E0, experiments), max(K0, arms)
        if (E, K) == (E0, K0):
            return
        if E > _MAX_EXPERIMENTS or K > _MAX_ARMS:
            raise CapacityError(f"state cannot hold {E} experiments x {K} arms")

        def grown(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
            out = np.zeros(shape, dtype=a.dtype)
            out[tuple(slice(0, s) for s in a.shape)] = a
            return out

        d = self.feature_dim
        for name in _ARM_F64 + _ARM_BOOL:
            setattr(self, name, grown(getattr(self, name), (E, K)))
        for name in ("policy", "n_arms", "bai_done", "ec_committed"):
            setattr(self, name, grown(getattr(self, name), (E,)))
        self.exp_f = grown(self.exp_f, (E, core.N_EXP_F))
        self.ucb = grown(self.ucb, (E, core.N_UCB, K))
        self.features = grown(self.features, (E, K, d))
        self.z = grown(self.z, (E, K, d))
        self.ainv = grown(self.ainv, (E, d, d))
        self.bvec = grown(self.bvec, (E, d))
        self.stamp = grown(self.stamp, (E,))
        self.alloc_stamp = np.full(E, -1, dtype=np.int64)  # arms may have grown: recompute all
        self.alloc = np.zeros((E, K))

    # ------------------------------------------------------------------ experiments and arms
    def add_experiment(self, params: ExperimentParams) -> int:
        """Register an experiment; returns its row. Capacity doubles when full."""
        if not isinstance(params, ExperimentParams):
            raise ConfigError(f"params must be an ExperimentParams, got {type(params).__name__}")
        if TABLE[params.policy].needs_features and self.feature_dim == 0:
            raise ConfigError(f"policy {params.policy!r} needs a BanditState with feature_dim > 0")
        row = self._n
        if row >= self.capacity_experiments:
            self._grow(2 * self.capacity_experiments, self.capacity_arms)
        self._n += 1
        self._params.append(params)
        self.policy[row] = params.code
        f = self.exp_f[row]
        f[:] = 0.0
        self._fill_params(row, params)
        f[core.F_T] = 1.0
        f[core.F_STEPS] = 0.0
        f[core.F_SQRT_LOG_T] = 0.0
        self.n_arms[row] = 0
        self.stamp[row] += 1
        self.bai_done[row] = False
        self.ec_committed[row] = False
        d = self.feature_dim
        if d:
            self.ainv[row] = np.eye(d) / params.ridge
            self.bvec[row] = 0.0
        return row

    def _fill_params(self, row: int, params: ExperimentParams) -> None:
        """Write ``params`` into ``exp_f[row]`` (the clocks t, steps and sqrt(log t) are left as they are)."""
        f = self.exp_f[row]
        f[core.F_ALPHA] = params.alpha
        f[core.F_N_AUX] = params.effective_n_aux
        f[core.F_GAMMA] = params.gamma
        f[core.F_LAMBDA] = params.conversion_weight
        f[core.F_HORIZON] = math.inf if params.horizon is None else params.horizon
        f[core.F_EXPLORE_N] = (math.ceil(params.explore_fraction * params.horizon) if params.policy == "ec" else 0.0)
        f[core.F_MIN_TRAFFIC] = params.min_traffic
        f[core.F_BURN_IN] = params.burn_in
        f[core.F_TS_A0] = params.ts_alpha0
        f[core.F_TS_B0] = params.ts_beta0
        f[core.F_EB_STRENGTH] = params.eb_strength
        f[core.F_LIN_ALPHA] = params.linucb_alpha
        f[core.F_RIDGE] = params.ridge
        f[core.F_BAI_EPS] = params.bai_epsilon
        f[core.F_BAI_GAMMA] = params.bai_gamma
        f[core.F_BAI_DELTA] = params.bai_delta
        f[core.F_BAI_BERNSTEIN] = 1.0 if params.bai_radius == "bernstein" else 0.0
        f[core.F_PROP_DRAWS] = params.propensity_draws
        f[core.F_TS_REFRESH] = params.ts_refresh

    def add_experiments(self, params: ExperimentParams, prior_ctr: Any, features: Any = None) -> np.ndarray:
        """Register many experiments with the same parameters at once (replays, benchmarks).

        ``prior_ctr`` float64[n, K]: one row per experiment, NaN where an arm has no prior
        yet; ``features`` float64[n, K, d] for LinUCB policies. Equivalent to ``n``
        ``add_experiment`` calls each followed by ``K`` ``add_arm`` calls; returns the rows.
        """
        prior = np.asarray(prior_ctr)
        if prior.dtype != np.float64 or prior.ndim != 2 or prior.shape[1] < 1:
            raise KernelInputError(f"prior_ctr must be float64[n, K] (NaN = no prior), got {prior.dtype}{prior.shape}")
        ok = np.isnan(prior) | ((prior >= 0.0) & (prior <= 1.0))
        if not ok.all():
            raise KernelInputError("prior_ctr values must be in [0, 1] or NaN")
        n, K = prior.shape
        linear = TABLE[params.policy].needs_features
        d = self.feature_dim
        if linear and features is None:
            raise KernelInputError(f"policy {params.policy!r} needs features float64[{n}, {K}, {d}]")
        if features is not None:
            features = np.asarray(features)
            if features.dtype != np.float64 or features.shape != (n, K, d) or not np.all(np.isfinite(features)):
                raise KernelInputError(f"features must be finite float64[{n}, {K}, {d}], got "
                                       f"{features.dtype}{features.shape}")
        if not n:
            return np.empty(0, dtype=np.int64)
        first = self.add_experiment(params)  # validates params, fills one exp_f row
        start = first
        end = start + n
        if end > self.capacity_experiments or K > self.capacity_arms:
            cap = self.capacity_experiments
            while cap < end:
                cap *= 2
            self._grow(cap, max(K, self.capacity_arms))
        rows = np.arange(start, end, dtype=np.int64)
        self.exp_f[start:end] = self.exp_f[start]
        self.policy[start:end] = params.code
        self.n_arms[start:end] = K
        self.bai_done[start:end] = False
        self.ec_committed[start:end] = False
        for name in _ARM_F64:
            getattr(self, name)[start:end] = 0.0
        has = ~np.isnan(prior)
        self.has_prior[start:end, :K] = has
        self.mu_aux[start:end, :K] = np.where(has, prior, 0.0)
        self.active[start:end] = False
        self.active[start:end, :K] = True
        self.candidate[start:end] = False
        self.candidate[start:end, :K] = family(params.policy) == "bai"
        if d:
            self.ainv[start:end] = np.eye(d) / params.ridge
            self.bvec[start:end] = 0.0
            self.features[start:end] = 0.0
            self.z[start:end] = 0.0
            if features is not None:
                self.features[start:end, :K] = features
                self.z[start:end, :K] = features / params.ridge
        self._n = end
        self.stamp[start:end] += 1
        self._params.extend([params] * (n - 1))
        core.refresh_all_range(start, end, self.exp_f, self.n_arms, self.impressions, self.clicks, self.conversions,
                               self.mu_aux, self.has_prior, self.active, self.ucb, core.TABLES)
        return rows

    def params(self, row: int) -> ExperimentParams:
        """The parameters an experiment was registered with."""
        return self._params[self._check_row(row)]

    def _check_row(self, row: Any) -> int:
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)) or not (0 <= row < self._n):
            raise KernelInputError(f"experiment row must be an integer in [0, {self._n}), got {row!r}")
        return int(row)

    def _check_slot(self, row: int, slot: Any) -> int:
        k = int(self.n_arms[row])
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)) or not (0 <= slot < k):
            raise KernelInputError(f"arm slot must be an integer in [0, {k}) for row {row}, got {slot!r}")
        return int(slot)

    def add_arm(self, row: int, prior_ctr: float | None = None, features: Any = None) -> int:
        """Add an arm (variant) to experiment ``row``, also while it runs; returns its slot.

        ``prior_ctr`` may come later through :meth:`set_prior`; until then the arm is
        scored without a prior (LLM-2UCBs: U2 = +inf, i.e. plain UCB). ``features``
        (float64[d]) are required for LinUCB policies. A new arm joins the BAI candidate
        set (and re-opens the search); after an E&C commit it is not served.
        """
        row = self._check_row(row)
        pol = self._params[row].policy
        slot = int(self.n_arms[row])
        x = None
        if TABLE[pol].needs_features:
            if features is None:
                raise KernelInputError(f"policy {pol!r} needs features (float64[{self.feature_dim}]) for every arm")
        if features is not None:
            x = np.asarray(features, dtype=np.float64)
            if x.shape != (self.feature_dim,) or not np.all(np.isfinite(x)):
                raise KernelInputError(
                    f"features must be {self.feature_dim} finite numbers, got shape {np.shape(features)}")
        mu = None if prior_ctr is None else _check_prior(prior_ctr)
        if slot >= self.capacity_arms:
            self._grow(self.capacity_experiments, 2 * self.capacity_arms)
        self.n_arms[row] = slot + 1
        for name in _ARM_F64:
            getattr(self, name)[row, slot] = 0.0
        self.has_prior[row, slot] = mu is not None
        self.mu_aux[row, slot] = 0.0 if mu is None else mu
        self.active[row, slot] = True
        self.candidate[row, slot] = family(pol) == "bai"
        if family(pol) == "bai":
            self.bai_done[row] = False
        if x is not None and self.feature_dim:
            self.features[row, slot] = x
            self.z[row, slot] = self.ainv[row] @ x
        self._refresh(row)
        return slot

    def set_prior(self, row: int, slot: int, prior_ctr: float) -> None:
        """Attach (or replace) an arm's LLM prior CTR, e.g. when the async model answers."""
        row = self._check_row(row)
        slot = self._check_slot(row, slot)
        self.mu_aux[row, slot] = _check_prior(prior_ctr)
        self.has_prior[row, slot] = True
        self._refresh(row)

    def set_features(self, row: int, slot: int, features: Any) -> None:
        """Replace a LinUCB arm's features (float64[d]) from now on, e.g. when the prior model's
        arrive. A and b keep what earlier updates added with the old row (each update uses the
        row current when it is applied); the cache z = A^-1 x is recomputed for the new row."""
        row = self._check_row(row)
        slot = self._check_slot(row, slot)
        x = np.asarray(features, dtype=np.float64)
        if not self.feature_dim or x.shape != (self.feature_dim,) or not np.all(np.isfinite(x)):
            raise KernelInputError(f"features must be {self.feature_dim} finite numbers, got shape {np.shape(features)}")
        self.features[row, slot] = x
        self.z[row, slot] = self.ainv[row] @ x
        self._refresh(row)

    def retire_arm(self, row: int, slot: int) -> None:
        """Stop serving an arm; its statistics stay for snapshots and replay."""
        row = self._check_row(row)
        slot = self._check_slot(row, slot)
        self.active[row, slot] = False
        if family(self._params[row].policy) == "bai":
            self.candidate[row, slot] = False
        self._refresh(row)

    def warm_start_linear(self, row: int, X: Any, r: Any) -> None:
        """LLM-LinUCB warm start (Algorithm 4, line 1): A = ridge I + X'X, b = X'r.

        ``X`` float64[M, d] are historical arm embeddings, ``r`` float64[M] their rewards.
        A is inverted once here; afterwards only Sherman-Morrison updates touch A^-1.
        """
        row = self._check_row(row)
        p = self._params[row]
        if not TABLE[p.policy].needs_features:
            raise ConfigError(f"warm_start_linear needs a LinUCB experiment, row {row} is {p.policy!r}")
        X = np.asarray(X)
        r = np.asarray(r)
        d = self.feature_dim
        if X.dtype != np.float64 or X.ndim != 2 or X.shape[1] != d:
            raise KernelInputError(f"X must be float64[M, {d}], got {X.dtype}{list(X.shape)}")
        if r.dtype != np.float64 or r.shape != (X.shape[0],):
            raise KernelInputError(f"r must be float64[{X.shape[0]}], got {r.dtype}{list(r.shape)}")
        if not (np.all(np.isfinite(X)) and np.all(np.isfinite(r))):
            raise KernelInputError("X and r must be finite")
        A = p.ridge * np.eye(d) + X.T @ X
        self.ainv[row] = np.linalg.inv(A)
        self.bvec[row] = X.T @ r
        k = int(self.n_arms[row])
        self.z[row, :k] = self.features[row, :k] @ self.ainv[row].T
        self.stamp[row] += 1

    # ------------------------------------------------------------------ named views
    def _col(self, col: int) -> np.ndarray:
        return self.exp_f[: self._n, col]

    @property
    def alpha(self) -> np.ndarray:
        return self._col(core.F_ALPHA)

    @property
    def n_aux(self) -> np.ndarray:
        return self._col(core.F_N_AUX)

    @property
    def gamma(self) -> np.ndarray:
        return self._col(core.F_GAMMA)

    @property
    def conversion_weight(self) -> np.ndarray:
        return self._col(core.F_LAMBDA)

    @property
    def t(self) -> np.ndarray:
        """Algorithm 1's t: 1 + (discounted) impressions so far, per experiment."""
        return self._col(core.F_T)

    @property
    def steps(self) -> np.ndarray:
        """Raw (undiscounted) impressions so far, per experiment."""
        return self._col(core.F_STEPS)

    def _refresh(self, row: int) -> None:
        self.stamp[row] += 1
        self.exp_f[row, core.F_TS_REF] = core.REF_NONE  # arms, prior or settings changed: TS refreshes
        core.refresh_experiment(row, self.exp_f, self.n_arms, self.impressions, self.clicks, self.conversions,
                                self.mu_aux, self.has_prior, self.active, self.ucb, core.TABLES)

    def allocations(self, rows: np.ndarray) -> np.ndarray:
        """``alloc[E, K]`` with rows ``rows`` (int64, validated by the caller) made current:
        the probability the next decision picks each arm (core.allocation_row), computed
        once per (experiment, state version)."""
        core.refresh_allocations(rows, self.stamp, self.alloc_stamp, self.alloc, *self.kernel_args())
        return self.alloc

    def allocation(self, row: int) -> np.ndarray:
        """float64[n_arms]: the probability the next decision of ``row`` picks each arm
        (floor, burn-in and ties included; TS by quadrature, error <= allocation.TS_ALLOCATION_ERROR)."""
        row = self._check_row(row)
        return self.allocations(np.array([row], dtype=np.int64))[row, :int(self.n_arms[row])].copy()

    def kernel_args(self) -> tuple:
        """The state arrays in the order the core kernels take them (read side)."""
        return (self.policy, self.exp_f, self.n_arms, self.impressions, self.clicks, self.conversions, self.mu_aux,
                self.has_prior, self.active, self.candidate, self.ucb, self.features, self.z, self.bvec, self.bai_done)

    def update_args(self) -> tuple:
        """The state arrays in the order ``core.engine`` takes them (read and write side)."""
        return (self.policy, self.exp_f, self.n_arms, self.impressions, self.clicks, self.conversions, self.mu_aux,
                self.has_prior, self.active, self.candidate, self.ucb, self.features, self.z, self.ainv, self.bvec,
                self.bai_done, self.ec_committed)

    # ------------------------------------------------------------------ results and snapshots
    def bai_done_for(self, row: int) -> bool:
        """Whether a BAI experiment has stopped (its good set is final)."""
        return bool(self.bai_done[self._check_row(row)])

    def good_arms(self, row: int) -> list[int]:
        """Algorithm 2's return value: the current candidate (good) set of a BAI experiment."""
        row = self._check_row(row)
        if family(self._params[row].policy) != "bai":
            raise ConfigError(f"good_arms needs a BAI experiment, row {row} is {self._params[row].policy!r}")
        k = int(self.n_arms[row])
        return [int(s) for s in np.flatnonzero(self.candidate[row, :k] & self.active[row, :k])]

    def bai_recommendation(self, row: int) -> list[int]:
        """What a BAI experiment returns if asked now, stopped or not.

        The candidate(s) with the highest Algorithm 2 mean (prior pseudo-pulls included,
        :func:`lola.kernels.policies.bai_interval`); exact ties are all returned. Empty when
        no candidate is left. Once ``bai_done_for(row)``, :meth:`good_arms` is the answer.
        """
        row = self._check_row(row)
        if family(self._params[row].policy) != "bai":
            raise ConfigError(f"bai_recommendation needs a BAI experiment, row {row} is {self._params[row].policy!r}")
        k = int(self.n_arms[row])
        f = self.exp_f[row]
        cands = [s for s in range(k) if self.candidate[row, s] and self.active[row, s]]
        means = [policies.bai_interval(f[core.F_N_AUX], self.impressions[row, s],
                                   self.clicks[row, s] + f[core.F_LAMBDA] * self.conversions[row, s],
                                   self.mu_aux[row, s], self.has_prior[row, s], k, f[core.F_BAI_DELTA],
                                   f[core.F_BAI_BERNSTEIN] > 0.5)[0] for s in cands]
        top = max(means, default=0.0)
        return [s for s, m in zip(cands, means) if m == top]

    def experiment_summary(self, row: int, seed: int = 0) -> dict[str, Any]:
        """Snapshot of one experiment for policy snapshots and dashboards.

        Per arm: impressions, clicks, conversions, prior (None if none yet), score (the
        policy's current index; TS: one posterior draw), serving_share (probability the
        next decision picks the arm, floor and burn-in included; TS by quadrature, the cached
        :meth:`allocation`). JSON-safe: infinities are written as strings.
        """
        row = self._check_row(row)
        p = self._params[row]
        k = int(self.n_arms[row])
        key = int(rng.decision_keys(np.uint64(seed), 1)[0])
        scores = np.full(max(self.capacity_arms, 1), np.nan)
        share = np.zeros(max(self.capacity_arms, 1))
        if k:
            core.scores_kernel(row, np.uint64(key), *self.kernel_args(), scores)
            share[:k] = self.allocation(row)

        def num(x: float) -> float | str | None:
            x = float(x)
            if math.isnan(x):
                return None
            return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")

        arms = []
        for s in range(k):
            arms.append({
                "slot": s,
                "active": bool(self.active[row, s]),
                "impressions": float(self.impressions[row, s]),
                "clicks": float(self.clicks[row, s]),
                "conversions": float(self.conversions[row, s]),
                "prior": float(self.mu_aux[row, s]) if self.has_prior[row, s] else None,
                "score": num(scores[s]),
                "serving_share": float(share[s]),
            })
        out: dict[str, Any] = {
            "row": row,
            "policy": p.policy,
            "t": float(self.exp_f[row, core.F_T]),
            "impressions_total": float(self.exp_f[row, core.F_STEPS]),
            "n_aux": num(self.exp_f[row, core.F_N_AUX]),
            "arms": arms,
        }
        if p.policy == "llm2ucb_eb":
            usable = self.active[row, :k] & self.has_prior[row, :k]
            out["n_aux_effective"] = num(adaptive_n_aux(
                float(self.exp_f[row, core.F_N_AUX]), float(self.exp_f[row, core.F_EB_STRENGTH]),
                self.impressions[row, :k].copy(), self.clicks[row, :k].copy(), self.mu_aux[row, :k].copy(),
                usable.copy()))
        if family(p.policy) == "bai":
            out["bai_done"] = bool(self.bai_done[row])
            out["good_arms"] = self.good_arms(row)
            out["recommendation"] = self.bai_recommendation(row)
        return out

    # ------------------------------------------------------------------ persistence
    def to_bytes(self) -> bytes:
        """Versioned, exact serialisation (NumPy ``.npz``, no pickle)."""
        n = self._n
        meta = {
            "magic": _MAGIC,
            "version": FORMAT_VERSION,
            "n": n,
            "capacity_experiments": self.capacity_experiments,
            "capacity_arms": self.capacity_arms,
            "feature_dim": self.feature_dim,
            "params": [params_to_json(p) for p in self._params],
        }
        arrays = {name: getattr(self, name)[:n] for name in SERIALISED}
        buf = io.BytesIO()
        np.savez(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "BanditState":
        """Inverse of :meth:`to_bytes`; rejects other formats and versions clearly."""
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                meta = json.loads(npz["__meta__"].tobytes().decode())
                arrays = {k: npz[k] for k in npz.files if k != "__meta__"}
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the same clear error
            raise KernelInputError(f"not a BanditState blob: {exc}") from None
        if meta.get("magic") != _MAGIC:
            raise KernelInputError("not a BanditState blob (bad magic)")
        version = meta.get("version")
        if version not in _EXP_F_WIDTH:
            raise KernelInputError(f"BanditState format version {version} is not supported "
                                   f"(this build reads {', '.join(map(str, _EXP_F_WIDTH))})")
        state = cls(meta["capacity_experiments"], meta["capacity_arms"], meta["feature_dim"])
        n = meta["n"]
        width = _EXP_F_WIDTH[version]
        shape = arrays["exp_f"].shape if "exp_f" in arrays else None
        if shape is None or shape[1:] != (width,):
            raise KernelInputError(f"not a BanditState blob: exp_f has shape {shape}, "
                                   f"format version {version} has {width} columns")
        arrays["exp_f"] = np.pad(arrays["exp_f"], ((0, 0), (0, core.N_EXP_F - width)))  # appended columns: 0.0
        rows_ucb = _UCB_ROWS[version]
        if "ucb" not in arrays or arrays["ucb"].shape[1:2] != (rows_ucb,):
            raise KernelInputError(f"not a BanditState blob: ucb has shape {arrays.get('ucb', np.empty(0)).shape}, "
                                   f"format version {version} has {rows_ucb} rows")
        arrays["ucb"] = np.pad(arrays["ucb"], ((0, 0), (0, core.N_UCB - rows_ucb), (0, 0)))
        for name, arr in arrays.items():
            getattr(state, name)[:n] = arr
        state._n = n
        state._params = [params_from_json(d) for d in meta["params"]]
        if version < 3:  # the column did not exist: the experiments' (default) ts_refresh
            state.exp_f[:n, core.F_TS_REFRESH] = [p.ts_refresh for p in state._params]
        assert all(p.policy in POLICIES for p in state._params)
        return state
