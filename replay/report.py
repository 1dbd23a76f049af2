"""Reporting for the paper replay: Table 8-style pairwise improvements with paired
t-tests, the Figure 7-style plot, JSON and a terminal table.

Inputs are per-test scores: ``scores[(tau, policy)]`` is a float array with one
entry per headline test (that test's clicks per period, averaged over reps).
Every policy saw the same tests with common random numbers, so comparisons are
paired by test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lola.errors import ConfigError

# (p-value threshold, stars), as in Table 8 of the paper.
STAR_LEVELS = ((1e-4, "****"), (1e-3, "***"), (1e-2, "**"), (5e-2, "*"))

# Table 8's columns first, then the extensions.
HEADLINE_PAIRS = (
    ("LOLA", "UCB"),
    ("LOLA", "PureLLM"),
    ("LOLA", "E&C"),
    ("UCB", "PureLLM"),
    ("UCB", "E&C"),
    ("PureLLM", "E&C"),
    ("LOLA-EB", "LOLA"),
    ("LOLA-EB", "PureLLM"),
    ("LOLA-EB", "UCB"),
    ("LLM-TS", "TS"),
    ("LOLA", "LLM-TS"),
    ("LLM-LinUCB", "UCB"),
)


def json_safe(obj):
    """``obj`` with NaN and infinities as ``None`` and dict keys as strings (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def stars(p_value: float) -> str:
    """Significance stars of Table 8: * p<=0.05, ** p<=0.01, *** p<=0.001, **** p<=0.0001."""
    if not np.isfinite(p_value):
        return ""
    for threshold, mark in STAR_LEVELS:
        if p_value <= threshold:
            return mark
    return ""


@dataclass(frozen=True)
class Improvement:
    tau: int
    a: str
    b: str
    improvement_pct: float
    p_value: float
    stars: str
    n_tests: int

    def as_dict(self) -> dict:
        return {
            "tau": self.tau,
            "a": self.a,
            "b": self.b,
            "improvement_pct": self.improvement_pct,
            "p_value": self.p_value,
            "stars": self.stars,
            "n_tests": self.n_tests,
        }


def paired_improvement(tau: int, a: str, b: str, score_a: np.ndarray, score_b: np.ndarray) -> Improvement:
    """% improvement of mean(a) over mean(b), and the two-sided paired t-test p-value across tests."""
    from scipy import stats

    score_a = np.asarray(score_a, dtype=np.float64)
    score_b = np.asarray(score_b, dtype=np.float64)
    if score_a.shape != score_b.shape or score_a.ndim != 1:
        raise ConfigError(f"paired scores must be 1-D arrays of one shape, got {score_a.shape} and {score_b.shape}")
    mean_b = score_b.mean()
    pct = 100.0 * (score_a.mean() / mean_b - 1.0) if mean_b > 0 else float("nan")
    diff = score_a - score_b
    if len(diff) < 2:
        p = float("nan")
    elif np.all(diff == diff[0]):
        # Identical paired differences: no variance; the test is degenerate.
        p = 1.0 if diff[0] == 0 else 0.0
    else:
        p = float(stats.ttest_rel(score_a, score_b).pvalue)
    return Improvement(int(tau), a, b, float(pct), p, stars(p), int(len(diff)))


def improvement_table(
    scores: Mapping[tuple[int, str], np.ndarray],
    taus: Sequence[int],
    policies: Sequence[str],
) -> list[Improvement]:
    """Every pair (a, b), a before b in ``policies`` order, at every tau."""
    out = []
    for tau in taus:
        for a, b in combinations(policies, 2):
            if (tau, a) in scores and (tau, b) in scores:
                out.append(paired_improvement(tau, a, b, scores[(tau, a)], scores[(tau, b)]))
    return out


def find(improvements: Sequence[Improvement], tau: int, a: str, b: str) -> Improvement | None:
    """The row for (a vs b) at tau; flips a reversed row (same p-value, % of the other base)."""
    for imp in improvements:
        if imp.tau == tau and imp.a == a and imp.b == b:
            return imp
    for imp in improvements:
        if imp.tau == tau and imp.a == b and imp.b == a:
            pct = 100.0 * (1.0 / (1.0 + imp.improvement_pct / 100.0) - 1.0)
            return Improvement(tau, a, b, pct, imp.p_value, imp.stars, imp.n_tests)
    return None


def results_rows(scores: Mapping[tuple[int, str], np.ndarray]) -> list[dict]:
    rows = []
    for (tau, policy), s in scores.items():
        s = np.asarray(s, dtype=np.float64)
        row = {
            "tau": int(tau),
            "policy": policy,
            "clicks_per_period": float(s.mean()),
            "std_err": float(s.std(ddof=1) / np.sqrt(len(s))) if len(s) > 1 else float("nan"),
            "n_tests": int(len(s)),
        }
        rows.append(row)
    return rows


def markdown_results(rows: Sequence[dict], taus: Sequence[int], policies: Sequence[str]) -> str:
    by = {(r["tau"], r["policy"]): r["clicks_per_period"] for r in rows}
    lines = ["| τ | " + " | ".join(policies) + " |", "|---" * (len(policies) + 1) + "|"]
    for tau in taus:
        best = max((by.get((tau, p), -1.0) for p in policies))
        cells = []
        for p in policies:
            v = by.get((tau, p))
            cell = "" if v is None else f"{v:.5f}"
            cells.append(f"**{cell}**" if v is not None and v == best else cell)
        lines.append(f"| {tau} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_improvements(improvements: Sequence[Improvement], taus: Sequence[int], pairs: Sequence[tuple[str, str]] = HEADLINE_PAIRS) -> str:
    present = [(a, b) for a, b in pairs if any(find(improvements, t, a, b) for t in taus)]
    lines = ["| τ | " + " | ".join(f"{a} vs {b}" for a, b in present) + " |", "|---" * (len(present) + 1) + "|"]
    for tau in taus:
        cells = []
        for a, b in present:
            imp = find(improvements, tau, a, b)
            cells.append("" if imp is None else f"{imp.improvement_pct:+.2f}{imp.stars} (p={imp.p_value:.2g})")
        lines.append(f"| {tau} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_figure7(rows: Sequence[dict], taus: Sequence[int], policies: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Figure 7: average clicks per test per period against τ, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {(r["tau"], r["policy"]): r for r in rows}
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    markers = "osD^v<>pP*X"
    for i, policy in enumerate(policies):
        xs = [t for t in taus if (t, policy) in by]
        if not xs:
            continue
        ys = np.array([by[(t, policy)]["clicks_per_period"] for t in xs])
        # No error bars: the spread across tests dwarfs the paired differences; the
        # improvement table carries the paired t-tests.
        ax.plot(xs, ys, marker=markers[i % len(markers)], label=policy, linewidth=1.4, markersize=4)
    ax.set_xlabel("τ (impressions per headline; horizon T = τ·K)")
    ax.set_ylabel("average clicks per test per period")
    ax.set_title(title or "Paper replay (Figure 7 protocol)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return save_figure(fig, path)
