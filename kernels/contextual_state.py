"""State and validating wrapper of the contextual kernels (:mod:`lola.kernels.contextual`).

``ContextualState(arm_dim, user_dim)`` holds, per experiment, the arms' text features
``arm_x[E, K, da]``, A^-1, b, theta (LinUCB) and the Gram matrix and oracle weights (FALCON)
over the interaction features x = a (x) u (d = da du). Capacity doubles on demand.
The prior enters as ``n_aux`` pseudo-impressions of the arm at the average user
(x = a_k (x) e_0, reward mu_k): LOLA's rule, in the Gram matrix (Algorithm 4's warm start).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from lola.errors import CapacityError, ConfigError, KernelInputError
from lola.kernels import contextual as ck

#: Largest d = arm_dim * user_dim (A^-1 is d x d per experiment: 32 KiB at d = 64).
MAX_DIM = 64
_MAX_EXPERIMENTS = 1 << 24
_MAX_ARMS = 1 << 10
_MAGIC = "lola.kernels.ContextualState/1"


@dataclass(frozen=True)
class ContextualParams:
    """Settings of one contextual experiment (bounds in docs/contextual.md)."""

    algorithm: str = "linucb"
    alpha: float = 0.05          # LinUCB confidence scale
    ridge: float = 1.0           # A starts at ridge * I
    gamma_scale: float = 1.0     # FALCON: gamma_m = max(1, gamma_scale sqrt(K tau_{m-1}))
    first_epoch: float = 32.0    # FALCON: impressions in epoch 1 (epochs then double)
    n_aux: float = 0.0           # prior worth in pseudo-impressions (0: no prior)

    def __post_init__(self) -> None:
        if self.algorithm not in ck.ALGORITHMS:
            raise ConfigError(f"algorithm must be one of {', '.join(ck.ALGORITHMS)}, got {self.algorithm!r}")
        for name, lo, hi, open_lo in (("alpha", 0.0, 1e6, False), ("ridge", 0.0, 1e12, True),
                                      ("gamma_scale", 0.0, 1e9, False), ("first_epoch", 1.0, 1e12, False),
                                      ("n_aux", 0.0, 1e9, False)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{name} must be a finite number, got {v!r}")
            if v > hi or v < lo or (open_lo and v <= lo):
                raise ConfigError(f"{name} must be in {'(' if open_lo else '['}{lo:g}, {hi:g}], got {v!r}")


class ContextualState:
    """All contextual experiments of a shard (see module docstring)."""

    def __init__(self, arm_dim: int = 4, user_dim: int = 8, capacity_experiments: int = 16,
                 capacity_arms: int = 4) -> None:
        for name, v in (("arm_dim", arm_dim), ("user_dim", user_dim), ("capacity_experiments", capacity_experiments),
                        ("capacity_arms", capacity_arms)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        if arm_dim * user_dim > MAX_DIM:
            raise ConfigError(f"arm_dim * user_dim must be <= {MAX_DIM}, got {arm_dim * user_dim}")
        self.da, self.du = int(arm_dim), int(user_dim)
        self.d = self.da * self.du
        self.n_experiments = 0
        self.params: list[ContextualParams] = []
        self._alloc(int(capacity_experiments), int(capacity_arms))

    def _alloc(self, E: int, K: int) -> None:
        d = self.d
        self.algo = np.zeros(E, dtype=np.int64)
        self.par = np.zeros((E, ck.N_PAR))
        self.n_arms = np.zeros(E, dtype=np.int64)
        self.active = np.zeros((E, K), dtype=np.bool_)
        self.arm_x = np.zeros((E, K, self.da))
        self.ainv = np.zeros((E, d, d))
        self.bvec = np.zeros((E, d))
        self.theta = np.zeros((E, d))
        self.gram = np.zeros((E, d, d))
        self.wts = np.zeros((E, d))
        self.retrain_due = np.zeros(E, dtype=np.bool_)

    def _grow(self, E: int, K: int) -> None:
        old = {n: getattr(self, n) for n in _ARRAYS}
        self._alloc(E, K)
        for n, a in old.items():
            new = getattr(self, n)
            if n in ("active", "arm_x"):
                new[:a.shape[0], :a.shape[1]] = a
            else:
                new[:a.shape[0]] = a

    # ------------------------------------------------------------------ registry
    def add_experiment(self, params: ContextualParams) -> int:
        if not isinstance(params, ContextualParams):
            raise KernelInputError(f"params must be ContextualParams, got {type(params).__name__}")
        e = self.n_experiments
        if e >= _MAX_EXPERIMENTS:
            raise CapacityError(f"at most {_MAX_EXPERIMENTS} contextual experiments per shard")
        if e >= self.algo.shape[0]:
            self._grow(2 * self.algo.shape[0], self.active.shape[1])
        self.n_experiments += 1
        self.params.append(params)
        self._init_row(e, params)
        return e

    def reset_row(self, row: int, params: ContextualParams) -> None:
        """Reuse a freed row (its experiment was evicted) for a new experiment: no arms, fresh model."""
        self._row(row)
        if not isinstance(params, ContextualParams):
            raise KernelInputError(f"params must be ContextualParams, got {type(params).__name__}")
        self.params[row] = params
        for n in ("n_arms", "active", "arm_x", "bvec", "theta", "wts", "retrain_due"):
            getattr(self, n)[row] = 0
        self.par[row] = 0.0
        self._init_row(row, params)

    def _init_row(self, e: int, params: ContextualParams) -> None:
        self.algo[e] = ck.ALGORITHMS[params.algorithm]
        p = self.par[e]
        p[ck.C_ALPHA], p[ck.C_RIDGE], p[ck.C_GAMMA_SCALE] = params.alpha, params.ridge, params.gamma_scale
        p[ck.C_GAMMA], p[ck.C_T], p[ck.C_EPOCH_END], p[ck.C_EPOCH] = 1.0, 0.0, params.first_epoch, 1.0
        self.ainv[e] = np.eye(self.d) / params.ridge
        self.gram[e] = np.eye(self.d) * params.ridge

    def add_arm(self, row: int, features: np.ndarray, prior_ctr: float | None = None) -> int:
        """New active arm with text features ``float64[arm_dim]`` (``features[0]`` should be 1)."""
        self._row(row)
        a = np.asarray(features, dtype=np.float64)
        if a.shape != (self.da,) or not np.isfinite(a).all():
            raise KernelInputError(f"features must be finite float64[{self.da}], got shape {a.shape}")
        k = int(self.n_arms[row])
        if k >= _MAX_ARMS:
            raise CapacityError(f"at most {_MAX_ARMS} arms per contextual experiment")
        if k >= self.active.shape[1]:
            self._grow(self.algo.shape[0], 2 * self.active.shape[1])
        self.arm_x[row, k] = a
        self.active[row, k] = True
        self.n_arms[row] = k + 1
        if prior_ctr is not None:
            self.set_prior(row, k, prior_ctr)
        return k

    def set_arm_features(self, row: int, slot: int, features: np.ndarray) -> None:
        """Replace an arm's features ``float64[arm_dim]`` from now on (the prior model's, when they
        arrive). A^-1, b and the Gram matrix keep what earlier updates added with the old row:
        each update uses the row current when it is applied."""
        self._slot(row, slot)
        a = np.asarray(features, dtype=np.float64)
        if a.shape != (self.da,) or not np.isfinite(a).all():
            raise KernelInputError(f"features must be finite float64[{self.da}], got shape {a.shape}")
        self.arm_x[row, slot] = a

    def set_prior(self, row: int, slot: int, prior_ctr: float) -> None:
        """Add the prior as ``n_aux`` pseudo-impressions with CTR ``prior_ctr`` at x = a_k (x) e_0."""
        self._slot(row, slot)
        mu = float(prior_ctr)
        if not 0.0 <= mu <= 1.0:
            raise KernelInputError(f"prior_ctr must be in [0, 1], got {prior_ctr!r}")
        n = self.params[row].n_aux
        if n <= 0.0:
            return
        user = np.zeros(self.du)
        user[0] = 1.0
        x = np.kron(self.arm_x[row, slot], user)
        ai = self.ainv[row]
        v = ai @ x
        ai -= (n / (1.0 + n * (x @ v))) * np.outer(v, v)
        self.bvec[row] += n * mu * x
        self.theta[row] = ai @ self.bvec[row]
        self.gram[row] += np.tril(n * np.outer(x, x))  # FALCON keeps the lower triangle (ctx_learn)
        if self.algo[row] == ck.ALG_FALCON:
            self.retrain_due[row] = True

    def retire_arm(self, row: int, slot: int) -> None:
        self.set_arm_active(row, slot, False)

    def set_arm_active(self, row: int, slot: int, active: bool) -> None:
        """Serve the arm or not (the variant lifecycle: pending, blocked and retired arms are not)."""
        self._slot(row, slot)
        self.active[row, slot] = bool(active)

    # ------------------------------------------------------------------ kernels
    def select(self, rows: np.ndarray, users: np.ndarray, randomness: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(slots int64[n], propensity float64[n]) for users ``float64[n, user_dim]``."""
        rows, users = self._batch(rows, users)
        if isinstance(randomness, np.ndarray):
            if randomness.dtype != np.uint64 or randomness.shape != rows.shape:
                raise KernelInputError("keys must be uint64 with the length of rows")
            keys, seed, use = randomness, 0, True
        else:
            keys, seed, use = np.empty(0, dtype=np.uint64), int(randomness) & (2 ** 64 - 1), False
        slots = np.empty(rows.shape[0], dtype=np.int64)
        prop = np.empty(rows.shape[0])
        ck.ctx_select(rows, users, keys, np.uint64(seed), use, self.algo, self.par, self.n_arms, self.active,
                      self.arm_x, self.ainv, self.theta, self.wts, slots, prop)
        return slots, prop

    def update(self, rows: np.ndarray, slots: np.ndarray, users: np.ndarray, impressions: np.ndarray,
               rewards: np.ndarray) -> None:
        """Train on (user, arm, impressions, reward) rows in order (reward may arrive in its own row)."""
        rows, users = self._batch(rows, users)
        n = rows.shape[0]
        slots = np.ascontiguousarray(slots, dtype=np.int64)
        w = np.ascontiguousarray(impressions, dtype=np.float64)
        r = np.ascontiguousarray(rewards, dtype=np.float64)
        if slots.shape != (n,) or w.shape != (n,) or r.shape != (n,):
            raise KernelInputError("slots, impressions and rewards must have the length of rows")
        if n and ((slots < 0).any() or (slots >= self.n_arms[rows]).any()):
            raise KernelInputError("slots must name an arm of their experiment")
        if n and not (np.isfinite(w).all() and np.isfinite(r).all() and (w >= 0).all() and (w <= 1e6).all()
                      and (np.abs(r) <= 1e6).all()):
            raise KernelInputError("impressions must be in [0, 1e6] and rewards finite with |r| <= 1e6")
        ck.ctx_update(rows, slots, users, w, r, self.algo, self.par, self.arm_x, self.ainv, self.bvec, self.theta,
                      self.gram, self.retrain_due, self.n_arms)

    def simulate(self, rows: np.ndarray, users: np.ndarray, segments: np.ndarray, ctr: np.ndarray,
                 seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fused decide+learn loop (:func:`ck.ctx_simulate`): click ~ Bernoulli(ctr[row, segment, slot]).

        Returns (slots, propensities, clicks), float64 clicks. FALCON refits synchronously at epoch ends.
        """
        rows, users = self._batch(rows, users)
        segments = np.ascontiguousarray(segments, dtype=np.int64)
        ctr = np.ascontiguousarray(ctr, dtype=np.float64)
        if (segments.shape != rows.shape or ctr.ndim != 3 or ctr.shape[0] < self.n_experiments
                or ctr.shape[2] < int(self.n_arms[:self.n_experiments].max(initial=0))):
            raise KernelInputError("segments must match rows; ctr must be float64[E, S, K]")
        if segments.size and (segments.min() < 0 or segments.max() >= ctr.shape[1]):
            raise KernelInputError(f"segments must be in [0, {ctr.shape[1]})")
        self.refit_due()
        n = rows.shape[0]
        slots, prop, clicks = np.empty(n, dtype=np.int64), np.empty(n), np.empty(n)
        ck.ctx_simulate(rows, users, segments, ctr, np.uint64(int(seed) & (2 ** 64 - 1)), self.algo, self.par,
                        self.n_arms, self.active, self.arm_x, self.ainv, self.bvec, self.theta, self.gram, self.wts,
                        self.retrain_due, slots, prop, clicks)
        return slots, prop, clicks

    # ------------------------------------------------------------------ FALCON oracle
    def due_rows(self) -> list[int]:
        """FALCON rows whose oracle must be refit (an epoch began or a prior arrived)."""
        return [int(e) for e in np.flatnonzero(self.retrain_due[:self.n_experiments])]

    def oracle_inputs(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Copies of (Gram, b) for a refit off the decision path; clears the due flag."""
        self.retrain_due[row] = False
        return self.gram[row].copy(), self.bvec[row].copy()

    @staticmethod
    def fit_oracle(gram: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The least-squares oracle (ridge regression over x): argmin sum (w.x - r)^2 + ridge |w|^2."""
        out = np.empty(b.shape[0])
        ck.solve_spd(np.ascontiguousarray(gram, dtype=np.float64), np.ascontiguousarray(b, dtype=np.float64), out)
        return out

    def set_oracle(self, row: int, weights: np.ndarray) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (self.d,) or not np.isfinite(w).all():
            raise KernelInputError(f"oracle weights must be finite float64[{self.d}]")
        self.wts[row] = w

    def refit_due(self) -> int:
        """Refit every due oracle now (replays and tests; the worker refits on a thread)."""
        rows = self.due_rows()
        for e in rows:
            self.set_oracle(e, self.fit_oracle(*self.oracle_inputs(e)))
        return len(rows)

    # ------------------------------------------------------------------ checks, checkpoints
    def _row(self, row: int) -> None:
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)) or not 0 <= row < self.n_experiments:
            raise KernelInputError(f"row must be in [0, {self.n_experiments}), got {row!r}")

    def _slot(self, row: int, slot: int) -> None:
        self._row(row)
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)) or not 0 <= slot < self.n_arms[row]:
            raise KernelInputError(f"slot must be an arm of row {row}, got {slot!r}")

    def _batch(self, rows: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(rows, np.ndarray) or rows.dtype != np.int64 or rows.ndim != 1:
            raise KernelInputError("rows must be a one-dimensional int64 array")
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_experiments):
            raise KernelInputError(f"rows must be in [0, {self.n_experiments})")
        if not isinstance(users, np.ndarray) or users.dtype != np.float64 or users.shape != (rows.shape[0], self.du):
            raise KernelInputError(f"users must be float64[{rows.shape[0]}, {self.du}]")
        if not np.isfinite(users).all():
            raise KernelInputError("users must be finite")
        return np.ascontiguousarray(rows), np.ascontiguousarray(users)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        E = self.n_experiments
        arrays = {n: getattr(self, n)[:E] for n in _ARRAYS}
        meta = np.array([self.da, self.du, E], dtype=np.int64)
        params = np.array([[p.alpha, p.ridge, p.gamma_scale, p.first_epoch, p.n_aux] for p in self.params]
                          ).reshape(E, 5)
        np.savez(buf, magic=np.array(_MAGIC), meta=meta, params=params, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "ContextualState":
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            if str(z["magic"]) != _MAGIC:
                raise KernelInputError("not a ContextualState blob")
            da, du, E = (int(v) for v in z["meta"])
            st = cls(da, du, max(E, 1), max(int(z["active"].shape[1]), 1))
            names = {v: k for k, v in ck.ALGORITHMS.items()}
            for e in range(E):
                alpha, ridge, gs, fe, n_aux = (float(v) for v in z["params"][e])
                st.params.append(ContextualParams(names[int(z["algo"][e])], alpha, ridge, gs, fe, n_aux))
            st.n_experiments = E
            for n in _ARRAYS:
                getattr(st, n)[:E] = z[n]
        return st


_ARRAYS = ("algo", "par", "n_arms", "active", "arm_x", "ainv", "bvec", "theta", "gram", "wts", "retrain_due")
