"""Validating public wrappers around the @njit kernels (stumpy's ``_stump``/``stump`` split).

The wrappers check dtype, shape and range once per batch and raise
:class:`lola.errors.KernelInputError` with one clear message; the kernels then run
without checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lola.errors import KernelInputError
from lola.kernels import core, rng
from lola.kernels.state import BanditState

#: Largest impressions, clicks or conversion value one ``update`` row may carry
#: (docs/operations/limits.md). With the parameter bounds of
#: :mod:`lola.kernels.params` no statistic can then overflow to inf.
MAX_UPDATE_VALUE = 1e12


def _array(name: str, value: Any, dtype: type, n: int | None = None) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise KernelInputError(f"{name} must be a numpy array of {np.dtype(dtype).name}, got {type(value).__name__}")
    if value.dtype != dtype:
        raise KernelInputError(f"{name} must have dtype {np.dtype(dtype).name}, got {value.dtype}")
    if value.ndim != 1:
        raise KernelInputError(f"{name} must be one-dimensional, got shape {value.shape}")
    if n is not None and value.shape[0] != n:
        raise KernelInputError(f"{name} must have length {n} (same as rows), got {value.shape[0]}")
    return np.ascontiguousarray(value)


_NO_I64 = np.empty(0, dtype=np.int64)
_NO_F64 = np.empty(0, dtype=np.float64)
_NO_U64 = np.empty(0, dtype=np.uint64)
_NO_U = np.empty((0, 2), dtype=np.float64)
_NO_CTR = np.empty((0, 0), dtype=np.float64)


def _engine(mode: int, state: BanditState, rows: np.ndarray, *, steps: int = 1, keys: np.ndarray = _NO_U64,
            uniforms: np.ndarray = _NO_U, have_uniforms: bool = False, seed: int = 0, want_propensity: bool = True,
            slots: np.ndarray = _NO_I64, w: np.ndarray = _NO_F64, c: np.ndarray = _NO_F64, v: np.ndarray = _NO_F64,
            true_ctr: np.ndarray = _NO_CTR, out_slots: np.ndarray = _NO_I64,
            out_prop: np.ndarray = _NO_F64) -> tuple[float, float]:
    # Always the same argument types, so the engine compiles (and caches) exactly once.
    total, psum, n_quad = core.engine(np.int64(mode), rows, np.int64(steps), keys, uniforms, bool(have_uniforms),
                                      np.uint64(seed), bool(want_propensity), slots, w, c, v, true_ctr,
                                      *state.update_args(), out_slots, out_prop, core.TABLES)
    state.ts_quadratures += int(n_quad)
    return total, psum


def _check_rows(state: BanditState, rows: Any) -> np.ndarray:
    if not isinstance(state, BanditState):
        raise KernelInputError(f"state must be a BanditState, got {type(state).__name__}")
    rows = _array("rows", rows, np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= state.n_experiments):
        bad = rows[(rows < 0) | (rows >= state.n_experiments)][0]
        raise KernelInputError(f"rows must be experiment rows in [0, {state.n_experiments}), got {int(bad)}")
    return rows


def _randomness(randomness: Any, n: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(keys uint64[n], uniforms float64[n, 2], have_uniforms)."""
    if isinstance(randomness, (int, np.integer)) and not isinstance(randomness, bool):
        if not (0 <= int(randomness) < 2**64):
            raise KernelInputError(f"seed must be an integer in [0, 2**64), got {randomness}")
        return rng.decision_keys(np.uint64(int(randomness)), n), np.empty((0, 2)), False
    if isinstance(randomness, np.ndarray):
        if randomness.dtype == np.uint64 and randomness.shape == (n,):
            return np.ascontiguousarray(randomness), np.empty((0, 2)), False
        if randomness.dtype == np.float64 and randomness.shape == (n, 2):
            u = np.ascontiguousarray(randomness)
            if not (np.all(u > 0.0) and np.all(u < 1.0)):
                raise KernelInputError("pre-drawn uniforms must lie in the open interval (0, 1)")
            # Thompson draws need more than two numbers: their key stream is derived from the
            # bits of the two uniforms, so the batch stays a pure function of the input.
            bits = u.view(np.uint64)
            keys = rng.decision_keys(np.uint64(0), n) ^ bits[:, 0] ^ (bits[:, 1] << np.uint64(1))
            return keys, u, True
    raise KernelInputError(
        f"randomness must be an int seed, uint64[{n}] per-decision keys or float64[{n}, 2] uniforms in (0, 1); "
        f"got {type(randomness).__name__}{getattr(randomness, 'shape', '')}")


def select(state: BanditState, rows: np.ndarray, randomness: Any) -> tuple[np.ndarray, np.ndarray]:
    """Choose one arm per decision: ``slots, propensity = select(state, rows, seed)``.

    Parameters
    ----------
    state : BanditState
    rows : int64[n]
        Experiment row of each decision (repeats allowed).
    randomness : int, uint64[n] or float64[n, 2]
        A seed; per-decision keys; or pre-drawn uniforms (column 0: floor exploration,
        column 1: tie-break). Deterministic given the same input.

    Returns
    -------
    slots : int64[n]
        Chosen arm slot per decision.
    propensity : float64[n]
        Probability the chosen arm had of being chosen by this decision: ``1/#tied``
        for deterministic indices (LLM-2UCBs, UCB, pure LLM, E&C, LinUCB, BAI); for TS/LLM-TS
        P(the arm's draw from the reference posterior is the largest), the posterior the
        decision drew from (``ts_refresh``: docs/kernels.md), by quadrature once per reference
        (absolute error at most :data:`lola.kernels.allocation.TS_ALLOCATION_ERROR`), with the
        min-traffic floor and burn-in folded in: always ``state.allocation(row)[slot]`` for the
        state the batch saw.

    Notes
    -----
    Batch semantics: every decision of a batch sees the state as of the call start
    (``select`` never writes statistics; it may take TS's reference posterior, a cache), so repeated rows of a deterministic
    policy in one batch go to the same arm unless there is a tie. Keep batches short
    (or interleave ``update``) when that matters.
    """
    rows = _check_rows(state, rows)
    n = rows.shape[0]
    keys, u, have_u = _randomness(randomness, n)
    slots = np.empty(n, dtype=np.int64)
    prop = np.empty(n, dtype=np.float64)
    if n:
        # TS: the chosen arm's probability from the reference posterior's cached allocation
        # (one quadrature per experiment and reference, however many decisions read it)
        _engine(core.MODE_SELECT, state, rows, keys=keys, uniforms=u, have_uniforms=have_u, want_propensity=True,
                out_slots=slots, out_prop=prop)
        if slots.min() < 0:
            bad = rows[slots < 0][0]
            raise KernelInputError(f"experiment row {int(bad)} has no active arm to select")
    return slots, prop


def update(state: BanditState, rows: np.ndarray, slots: np.ndarray, impressions: np.ndarray, clicks: np.ndarray,
           conversion_value: np.ndarray) -> None:
    """Apply feedback rows in array order: impressions, clicks and conversion value per slot.

    Parameters
    ----------
    rows, slots : int64[n]
    impressions, clicks, conversion_value : float64[n]
        In [0, :data:`MAX_UPDATE_VALUE`]. An impression event is ``(1, 0, 0)``, a later click
        ``(0, 1, 0)``, a conversion worth 12.5 ``(0, 0, 12.5)``; aggregated rows work too.

    Notes
    -----
    Updates apply in array order. ``t`` and the experiment's clock advance by the
    impressions. With gamma < 1 the experiment's statistics (and LinUCB's A, b) are
    discounted by ``gamma ** impressions`` before each row is added. E&C commits and
    BAI eliminates inside ``update``, so ``select`` stays read-only. The reward the
    policies learn from is ``clicks + conversion_weight * conversion_value``.
    """
    rows = _check_rows(state, rows)
    n = rows.shape[0]
    slots = _array("slots", slots, np.int64, n)
    cols = [_array(name, v, np.float64, n) for name, v in
            (("impressions", impressions), ("clicks", clicks), ("conversion_value", conversion_value))]
    if n:
        if np.any(slots < 0) or np.any(slots >= state.n_arms[rows]):
            i = int(np.flatnonzero((slots < 0) | (slots >= state.n_arms[rows]))[0])
            raise KernelInputError(f"slot {int(slots[i])} does not exist in experiment row {int(rows[i])}")
        for name, v in zip(("impressions", "clicks", "conversion_value"), cols):
            # np.all(v <= MAX) is False for NaN too, so one comparison checks both.
            if not np.all(v <= MAX_UPDATE_VALUE) or np.any(v < 0.0):
                raise KernelInputError(f"{name} must be in [0, {MAX_UPDATE_VALUE:g}] (finite)")
        _engine(core.MODE_UPDATE, state, rows, slots=slots, w=cols[0], c=cols[1], v=cols[2])
        state.stamp[rows] += 1  # every updated row has a new state version


def simulate(state: BanditState, rows: np.ndarray, steps: int, true_ctr: np.ndarray, seed: int,
             propensities: bool = False) -> tuple[float, float]:
    """Fused select+update for replays and benchmarks (not for the worker).

    Each experiment in ``rows`` (distinct rows) runs ``steps`` decisions, each followed
    at once by its update, as the paper's replay runs each test over its horizon. Blocks
    of experiments are interleaved step by step for speed; decision keys depend only on
    (position in ``rows``, step), so the result does not depend on that order. Clicks are
    Bernoulli with
    ``true_ctr[row, slot]``. Runs the same engine loop as :func:`select` and
    :func:`update`. ``propensities=False`` skips TS's propensity (one quadrature per
    reference posterior: per decision with ``ts_refresh = 0``); TS's decisions do not depend
    on it. Returns ``(total clicks, sum of propensities)``.
    """
    rows = _check_rows(state, rows)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise KernelInputError(f"steps must be an integer >= 0, got {steps!r}")
    if not isinstance(true_ctr, np.ndarray) or true_ctr.dtype != np.float64 or true_ctr.ndim != 2 \
            or true_ctr.shape[0] < state.n_experiments or true_ctr.shape[1] < int(state.n_arms.max(initial=0)):
        raise KernelInputError("true_ctr must be float64[n_experiments, arms] covering every experiment and arm")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (0 <= int(seed) < 2**64):
        raise KernelInputError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    total, psum = _engine(core.MODE_SIMULATE, state, rows, steps=int(steps), seed=int(seed),
                          want_propensity=bool(propensities), true_ctr=np.ascontiguousarray(true_ctr))
    state.stamp[rows] += 1
    return float(total), float(psum)
