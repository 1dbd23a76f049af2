"""The report's PNG plots (matplotlib, Agg backend): clicks, allocation over time, calibration."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import numpy as np  # noqa: E402

from lola.demo.stats import AllocationStats  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_clicks(stats: AllocationStats | None, replay_rows: Sequence[dict], refs: dict[str, float], title: str,
                path: Path) -> Path | None:
    """Bars: the worker's clicks per period (realised, expected) and the replay's, with the reference lines."""
    bars: list[tuple[str, float, float]] = []
    if stats and stats.impressions:
        bars.append(("worker (realised)", stats.realised_clicks_per_period, stats.realised_se))
        bars.append(("worker (expected)", stats.expected_clicks_per_period, 0.0))
    for row in replay_rows:
        bars.append((f"replay {row['policy']}", row["clicks_per_period"], row.get("std_err") or 0.0))
    bars = [(n, v, e if math.isfinite(e) else 0.0) for n, v, e in bars if math.isfinite(v)]
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.8))
    names = [b[0] for b in bars]
    ax.bar(names, [b[1] for b in bars], yerr=[b[2] for b in bars],
           color=["#2a9d8f" if n.startswith("worker") else "#8d99ae" for n in names], capsize=3)
    for (label, value), style in zip(refs.items(), ("--", ":")):
        ax.axhline(value, color="k", linestyle=style, linewidth=1, label=f"{label}: {value:.4f}")
    lo = min([b[1] for b in bars] + list(refs.values()))
    hi = max([b[1] + b[2] for b in bars] + list(refs.values()))
    ax.set_ylim(lo - 0.15 * (hi - lo + 1e-9), hi + 0.15 * (hi - lo + 1e-9))
    ax.set_ylabel("clicks per test per period")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right", fontsize=8)
    return _save(fig, path)


def _finish_over_run(fig, ax, uniform: float, uniform_label: str, ylabel: str, path: Path) -> Path:
    """The uniform reference line, axes on [0, 1] over the run's seconds, legend, saved."""
    ax.axhline(uniform, color="k", linestyle="--", linewidth=1, label=f"{uniform_label}: {uniform:.1%}")
    ax.set_xlabel("seconds since demo start")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_allocation(history: Sequence[dict], uniform: float, path: Path) -> Path | None:
    """The share of impressions on the best headline over the run (cumulative and per interval)."""
    pts = [(h["t"], h["best_share"], h.get("impressions", 0)) for h in history
           if isinstance(h.get("best_share"), float) and math.isfinite(h["best_share"])]
    if len(pts) < 2:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, color="#2a9d8f",
            label="worker: cumulative share on best headline")
    # Share in each interval between snapshots: where traffic goes now, not on average so far.
    inter = [(b[0], (b[1] * b[2] - a[1] * a[2]) / (b[2] - a[2])) for a, b in zip(pts, pts[1:]) if b[2] - a[2] >= 500]
    if inter:
        ax.plot([p[0] for p in inter], [p[1] for p in inter], linewidth=1, color="#e76f51", alpha=0.8,
                label="worker: share on best headline in each interval")
    return _finish_over_run(fig, ax, uniform, "uniform split", "share of impressions", path)


def plot_p_best(history: Sequence[dict], uniform: float, path: Path) -> Path | None:
    """Mean P(best) of each test's archive-best headline over the run (snapshot ``stats``)."""
    pts = [(h["t"], h["p_best_of_best"], h["p_best_of_best_with_prior"]) for h in history if "p_best_of_best" in h]
    if len(pts) < 2:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, color="#2a9d8f",
            label="data only (Beta(1, 1))")
    ax.plot([p[0] for p in pts], [p[2] for p in pts], linestyle=":", color="#e76f51", label="with the LLM prior")
    return _finish_over_run(fig, ax, uniform, "no information", "mean P(best) of the best headline", path)


def plot_calibration(cal: dict, path: Path) -> Path:
    """Predicted prior CTR against archive CTR per headline, binned means, and this run's realised CTRs."""
    p, y = cal["pred"], cal["true"]
    fig, ax = plt.subplots(figsize=(5, 4.6))
    ax.scatter(p, y, s=10, alpha=0.5, color="#8d99ae", label="archive CTR per headline")
    if len(p) >= 10:  # binned means (deciles of the prediction)
        edges = np.quantile(p, np.linspace(0, 1, min(10, len(p) // 5) + 1))
        idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
        bins = [k for k in range(len(edges) - 1) if np.any(idx == k)]
        ax.plot([p[idx == k].mean() for k in bins], [y[idx == k].mean() for k in bins], marker="s", color="#e76f51",
                label="binned mean (archive)")
    if cal["realised"]:
        rp, ry = zip(*cal["realised"])
        ax.scatter(rp, ry, s=14, marker="x", color="#2a9d8f", label="realised in this run (>=200 impr.)")
    lim = [0, float(max(p.max(), y.max()) * 1.05)]
    ax.plot(lim, lim, "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_xlabel("prior model's predicted CTR")
    ax.set_ylabel("realised CTR")
    ax.set_title(f"R²={cal['r2']:.3f}  MAE={cal['mae']:.4f}  n={cal['headlines']}")
    ax.legend(fontsize=7)
    return _save(fig, path)
