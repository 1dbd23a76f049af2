"""Lifecycle operations of :class:`lola.kernels.BanditState` that give memory back.

A mixin of BanditState (split out to keep modules short): re-activating an arm,
changing an experiment's parameters while it runs, removing an arm's column and an
experiment's row, and shrinking the arrays once they are mostly empty. Plain NumPy
slicing on the state's arrays: no kernel is involved (nothing here is on the
decision path; a lifecycle event or an eviction sweep calls it).

Rows and slots move: :meth:`remove_experiment` fills the freed row with the last row
(and returns which row moved), :meth:`remove_arm` shifts the arms after the removed
slot one to the left. Callers keep their own row/slot maps in step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lola.errors import ConfigError, KernelInputError
from lola.kernels.params import ExperimentParams
from lola.kernels.policy_table import family

#: Arrays shrink (halve) once used rows are at most this fraction of their capacity;
#: never below these minimum capacities.
SHRINK_FRACTION = 0.25
MIN_CAPACITY_EXPERIMENTS = 64
MIN_CAPACITY_ARMS = 4

_PER_ROW = ("policy", "n_arms", "bai_done", "ec_committed", "exp_f", "ucb", "features", "z", "ainv", "bvec",
            "stamp", "alloc", "impressions", "clicks", "conversions", "mu_aux", "has_prior", "active", "candidate")

#: The arrays a checkpoint holds: BanditState.to_bytes, and the rows of an incremental
#: checkpoint (lola.stream.delta). The allocation cache and stamps are not state.
SERIALISED = ("impressions", "clicks", "conversions", "mu_aux", "has_prior", "active", "candidate",
              "exp_f", "ucb", "policy", "n_arms", "bai_done", "ec_committed", "features", "z", "ainv", "bvec")


def params_to_json(p: ExperimentParams) -> dict[str, Any]:
    """An experiment's parameters as JSON (non-finite floats as their repr)."""
    return {k: (repr(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in p.to_dict().items()}


def params_from_json(d: dict[str, Any]) -> ExperimentParams:
    """Inverse of :func:`params_to_json`."""
    return ExperimentParams(**{k: (float(v) if k == "n_aux" and isinstance(v, str) else v) for k, v in d.items()})


class CompactionMixin:
    """See the module docstring. Uses BanditState's arrays, ``_n``, ``_params`` and checks."""

    _n: int
    _params: list
    feature_dim: int

    def set_arm_active(self: Any, row: int, slot: int, active: bool) -> None:
        """Serve (True) or stop serving (False) an arm; statistics stay. BAI: joins/leaves the candidates."""
        row = self._check_row(row)
        slot = self._check_slot(row, slot)
        self.active[row, slot] = bool(active)
        if family(self._params[row].policy) == "bai":
            self.candidate[row, slot] = bool(active)
            if active:
                self.bai_done[row] = False
        self._refresh(row)

    def set_params(self: Any, row: int, params: ExperimentParams) -> None:
        """Replace a running experiment's parameters (same policy); counts and clocks stay."""
        row = self._check_row(row)
        if not isinstance(params, ExperimentParams):
            raise ConfigError(f"params must be an ExperimentParams, got {type(params).__name__}")
        if params.policy != self._params[row].policy:
            raise ConfigError(f"the policy of a running experiment cannot change ({self._params[row].policy!r} "
                              f"-> {params.policy!r})")
        self._params[row] = params
        self._fill_params(row, params)
        self._refresh(row)

    def remove_arm(self: Any, row: int, slot: int) -> None:
        """Delete an arm's column of ``row``; the arms after it move one slot left."""
        row = self._check_row(row)
        slot = self._check_slot(row, slot)
        k = int(self.n_arms[row])
        for name in ("impressions", "clicks", "conversions", "mu_aux", "has_prior", "active", "candidate"):
            a = getattr(self, name)
            a[row, slot:k - 1] = a[row, slot + 1:k]
            a[row, k - 1] = 0
        self.ucb[row, :, slot:k - 1] = self.ucb[row, :, slot + 1:k]
        self.ucb[row, :, k - 1] = 0.0
        if self.feature_dim:
            for name in ("features", "z"):
                a = getattr(self, name)
                a[row, slot:k - 1] = a[row, slot + 1:k]
                a[row, k - 1] = 0.0
        self.n_arms[row] = k - 1
        self.alloc_stamp[row] = -1
        self._refresh(row)
        self.shrink()

    def remove_experiment(self: Any, row: int) -> int | None:
        """Delete experiment ``row``; the last row moves into it. Returns the row that moved (or None)."""
        row = self._check_row(row)
        last = self._n - 1
        moved = None
        if row != last:
            for name in _PER_ROW:
                a = getattr(self, name)
                a[row] = a[last]
            self._params[row] = self._params[last]
            self.stamp[row] += 1
            moved = last
        self.alloc_stamp[row] = -1
        self.alloc_stamp[last] = -1
        self._params.pop()
        self._n = last
        self.shrink()
        return moved

    def shrink(self: Any) -> bool:
        """Halve the arrays while they are at most SHRINK_FRACTION full; True if they changed."""
        E0, K0 = self.impressions.shape
        n = self._n
        k_used = int(self.n_arms[:n].max()) if n else 0
        E, K = E0, K0
        while E > MIN_CAPACITY_EXPERIMENTS and n <= E * SHRINK_FRACTION:
            E //= 2
        while K > MIN_CAPACITY_ARMS and k_used <= K * SHRINK_FRACTION:
            K //= 2
        if (E, K) == (E0, K0):
            return False
        d = self.feature_dim

        def cut(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
            # a copy, always: a slice of leading rows is already contiguous, and
            # ascontiguousarray would return that view, which keeps the whole old array alive
            return a[tuple(slice(0, s) for s in shape)].copy()

        for name in ("impressions", "clicks", "conversions", "mu_aux", "has_prior", "active", "candidate"):
            setattr(self, name, cut(getattr(self, name), (E, K)))
        for name in ("policy", "n_arms", "bai_done", "ec_committed", "stamp"):
            setattr(self, name, cut(getattr(self, name), (E,)))
        self.exp_f = cut(self.exp_f, (E, self.exp_f.shape[1]))
        self.ucb = cut(self.ucb, (E, self.ucb.shape[1], K))
        self.features = cut(self.features, (E, K, d))
        self.z = cut(self.z, (E, K, d))
        self.ainv = cut(self.ainv, (E, d, d))
        self.bvec = cut(self.bvec, (E, d))
        self.alloc_stamp = np.full(E, -1, dtype=np.int64)
        self.alloc = np.zeros((E, K))
        return True

    def nbytes(self: Any) -> int:
        """Bytes held by the state's arrays (a gauge, and the compaction tests' measure): a view's
        whole base counts, since it keeps the base alive."""
        return sum((a if a.base is None else a.base).nbytes for a in vars(self).values() if isinstance(a, np.ndarray))

    # ------------------------------------------------------------------ rows of incremental checkpoints
    def copy_rows(self: Any) -> dict[str, np.ndarray]:
        """A copy of the serialised arrays' used rows (the reference :meth:`changed_rows` compares with)."""
        n = self._n
        return {name: getattr(self, name)[:n].copy() for name in SERIALISED}

    def changed_rows(self: Any, reference: dict[str, np.ndarray]) -> np.ndarray:
        """Rows below both row counts whose serialised values differ bitwise from ``reference``'s."""
        m = min(self._n, len(reference["policy"]))
        changed = np.zeros(m, dtype=np.bool_)
        if m == 0:
            return np.flatnonzero(changed)
        for name in SERIALISED:
            a, b = getattr(self, name)[:m], reference[name][:m]
            if a.shape != b.shape:
                raise KernelInputError(f"reference array {name} has shape {b.shape}, the state {a.shape}")
            if a.size == 0:
                continue
            a, b = a.reshape(m, -1), b.reshape(m, -1)
            if a.dtype == np.float64:  # bitwise: NaN equals itself, -0.0 differs from 0.0
                a, b = a.view(np.int64), b.view(np.int64)
            changed |= (a != b).any(axis=1)
        return np.flatnonzero(changed)

    def take_rows(self: Any, rows: Any) -> dict[str, np.ndarray]:
        """The serialised arrays' values of ``rows`` (copies), for :meth:`put_rows`."""
        idx = np.asarray(rows, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self._n):
            raise KernelInputError(f"rows must be in [0, {self._n}), got {idx.min()}..{idx.max()}")
        return {name: getattr(self, name)[idx] for name in SERIALISED}

    def put_rows(self: Any, n: int, rows: Any, arrays: dict[str, np.ndarray], params: list) -> None:
        """Make the state hold ``n`` rows, with ``rows`` set to ``arrays`` / ``params``.

        Rows below ``n`` not in ``rows`` must already hold their values (an incremental
        checkpoint's unchanged experiments); rows from ``n`` up are cleared, as after a
        restore from :meth:`to_bytes`. Everything is validated before anything changes.
        """
        idx = np.asarray(rows, dtype=np.int64)
        if not 0 <= n <= self.capacity_experiments:
            raise KernelInputError(f"n must be in [0, {self.capacity_experiments}], got {n}")
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise KernelInputError(f"rows must be in [0, {n})")
        if len(params) != idx.size or not all(isinstance(p, ExperimentParams) for p in params):
            raise KernelInputError("put_rows needs one ExperimentParams per row")
        for name in SERIALISED:
            a = arrays.get(name)
            want = (idx.size,) + getattr(self, name).shape[1:]
            if a is None or a.shape != want or a.dtype != getattr(self, name).dtype:
                raise KernelInputError(f"put_rows: {name} must have shape {want}, got "
                                       f"{None if a is None else (a.shape, a.dtype)}")
        plist = self._params[:n] + [None] * (n - len(self._params[:n]))
        for r, p in zip(idx.tolist(), params):
            plist[r] = p
        if any(p is None for p in plist):
            raise KernelInputError("put_rows: a row beyond the old row count was not given")
        old_n = self._n
        for name in SERIALISED:
            getattr(self, name)[idx] = arrays[name]
        for name in _PER_ROW:
            if old_n > n:
                getattr(self, name)[n:old_n] = 0
        self.alloc_stamp[:max(n, old_n)] = -1
        self.stamp[idx] += 1
        self._n = n
        self._params = plist
