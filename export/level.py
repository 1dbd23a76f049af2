"""The site-wide CTR level of each test week: the part of a headline's CTR that no text can explain.

Why
---
On the Upworthy archive a large share of the variance of per-headline CTR is *between
tests*, and it moves with time: the site's audience, placement and traffic mix shift
week to week. A regressor trained on absolute CTR spends its capacity on that level,
which the headline text carries almost no information about, and learns little about
what matters to a bandit: which headline of a test beats the others.

:class:`WeekLevel` estimates that level from training packages alone, as an
impression-weighted Gaussian-kernel average of package CTRs over the week index. The
``level_deviation`` training target (see :mod:`lola.export.data`) subtracts each test's
mean CTR instead, so the network only learns *within-test* differences, and serving
adds the week's level back: ``prior = level(week) + std * z``.

This module is pure NumPy and the standard library: the serving path imports it.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lola.errors import DataError

__all__ = ["week_index", "WeekLevel", "fit_week_level", "fit_package_level"]

#: Candidate kernel bandwidths in weeks; one is picked on the tune split, never on test.
BANDWIDTHS = (0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0)


def week_index(test_week: int | None) -> float:
    """A continuous week number for the archive's ``test_week`` (``YYYYWW``); NaN when unknown.

    ISO weeks map exactly; week 53 of a 52-week year (which the ISO calendar lacks)
    maps to the week after week 52, so nothing is rejected.
    """
    if test_week is None:
        return float("nan")
    year, week = divmod(int(test_week), 100)
    if not 1 <= week <= 53 or year < 1:
        return float("nan")
    try:
        day = _dt.date.fromisocalendar(year, week, 1)
    except ValueError:
        day = _dt.date.fromisocalendar(year, 52, 1) + _dt.timedelta(days=7 * (week - 52))
    return day.toordinal() / 7.0


def _kernel_level(centres: np.ndarray, weeks: np.ndarray, ctr: np.ndarray, imps: np.ndarray,
                  bandwidth: float) -> np.ndarray:
    # [n_centres, n_packages] is small here (a few hundred weeks by ~10k packages).
    d = (centres[:, None] - weeks[None, :]) / bandwidth
    k = np.exp(-0.5 * d * d) * imps[None, :]
    return (k @ ctr) / np.maximum(k.sum(axis=1), 1e-300)


@dataclass(frozen=True)
class WeekLevel:
    """Dense table of the CTR level per week over the training range.

    Weeks before the first or after the last training week take the nearest edge's
    level (for a new variant arriving today, that is the most recent level); an
    unknown week takes ``overall``.
    """

    first_week: float
    levels: tuple[float, ...]
    overall: float
    bandwidth: float

    def __call__(self, weeks: np.ndarray | Sequence[float] | None, n: int | None = None) -> np.ndarray:
        """Level per week index (float64). ``weeks=None``: the latest level, ``n`` times."""
        table = np.asarray(self.levels, dtype=np.float64)
        if weeks is None:
            return np.full(int(n or 0), table[-1])
        w = np.asarray(weeks, dtype=np.float64)
        pos = np.clip(np.rint(w - self.first_week), 0, len(table) - 1)
        out = table[np.where(np.isfinite(pos), pos, 0).astype(np.int64)]
        return np.where(np.isfinite(w), out, self.overall)

    @property
    def latest(self) -> float:
        return float(self.levels[-1])

    def to_dict(self) -> dict:
        return {"first_week_index": self.first_week, "levels": list(self.levels), "overall": self.overall,
                "bandwidth_weeks": self.bandwidth}

    @classmethod
    def from_dict(cls, d: dict) -> "WeekLevel":
        try:
            levels = tuple(float(x) for x in d["levels"])
            if not levels:
                raise ValueError("empty level table")
            return cls(float(d["first_week_index"]), levels, float(d["overall"]), float(d["bandwidth_weeks"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"model card: unreadable week level table ({exc})") from None


def fit_week_level(train_weeks: np.ndarray, train_ctr: np.ndarray, train_imps: np.ndarray,
                   tune_weeks: np.ndarray | None = None, tune_ctr: np.ndarray | None = None,
                   tune_imps: np.ndarray | None = None, bandwidths: Sequence[float] = BANDWIDTHS) -> tuple[WeekLevel, dict]:
    """Fit the table on train packages; pick the bandwidth by impression-weighted MSE on tune packages.

    Returns the level and a report of the tune error per bandwidth. Without tune data
    the middle candidate is used (and the report says so).
    """
    train_weeks = np.asarray(train_weeks, dtype=np.float64)
    train_ctr = np.asarray(train_ctr, dtype=np.float64)
    train_imps = np.asarray(train_imps, dtype=np.float64)
    known = np.isfinite(train_weeks)
    if known.sum() < 2:
        raise DataError("fewer than 2 training packages have a test_week; cannot fit the week level")
    w, y, n = train_weeks[known], train_ctr[known], train_imps[known]
    overall = float(np.sum(n * y) / np.sum(n))
    centres = np.arange(np.floor(w.min()), np.ceil(w.max()) + 1.0)
    errors: dict[str, float] = {}
    if tune_weeks is not None and tune_ctr is not None and tune_imps is not None:
        tw = np.asarray(tune_weeks, dtype=np.float64)
        ok = np.isfinite(tw)
        ty, tn = np.asarray(tune_ctr, dtype=np.float64)[ok], np.asarray(tune_imps, dtype=np.float64)[ok]
        for bw in bandwidths:
            pred = _kernel_level(tw[ok], w, y, n, bw)
            errors[f"{bw:g}"] = float(np.sum(tn * (ty - pred) ** 2) / np.sum(tn))
        best = float(min(bandwidths, key=lambda b: errors[f"{b:g}"]))
        how = "tune split, impression-weighted MSE of package CTR"
    else:
        best = float(sorted(bandwidths)[len(bandwidths) // 2])
        how = "no tune data: middle candidate"
    levels = _kernel_level(centres, w, y, n, best)
    level = WeekLevel(float(centres[0]), tuple(float(v) for v in levels), overall, best)
    return level, {"bandwidth_weeks": best, "chosen_by": how, "tune_mse_by_bandwidth": errors,
                   "weeks": len(levels)}


def fit_package_level(train_packages: Sequence, tune_packages: Sequence | None = None) -> tuple[WeekLevel, dict]:
    """:func:`fit_week_level` on archive packages (:class:`lola.data.upworthy.Package`)."""

    def columns(packages):
        return (np.array([week_index(p.test_week) for p in packages], dtype=np.float64),
                np.array([p.ctr for p in packages], dtype=np.float64),
                np.array([p.impressions for p in packages], dtype=np.float64))

    tune = columns(tune_packages) if tune_packages else (None, None, None)
    return fit_week_level(*columns(train_packages), *tune)
