"""Creativity, the λ trade-off and its elbow (pure NumPy; no model).

* **creativity** of a candidate: the mean of (a) embedding novelty, 1 - the highest
  cosine similarity to any existing variant or other candidate, and (b) distinct-n
  novelty, the share of its word 1- and 2-grams found in none of them;
* **rank**: ``(1 - λ) z(predicted CTR) + λ z(creativity)``, z-scored over the candidates
  (the e-commerce copy paper's creativity–conversion trade-off); λ = 0 ranks by CTR only;
* **λ curve**: the top-k's mean predicted CTR and mean creativity for λ on a grid; the
  elbow is the grid point farthest from the chord between λ = 0 and λ = 1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lola.errors import ConfigError

NGRAMS = (1, 2)
DEFAULT_LAMBDA = 0.3
LAMBDA_GRID = tuple(np.round(np.linspace(0.0, 1.0, 21), 2))


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = text.casefold().split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def distinct_novelty(text: str, others: Sequence[str]) -> float:
    """Share of ``text``'s word n-grams (n in NGRAMS) found in none of ``others``, averaged over n."""
    scores = []
    for n in NGRAMS:
        mine = ngrams(text, n)
        if not mine:
            continue
        seen = set().union(*(ngrams(o, n) for o in others)) if others else set()
        scores.append(len(mine - seen) / len(mine))
    return float(np.mean(scores)) if scores else 0.0


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Set diversity: distinct n-grams / all n-grams over ``texts`` (Li et al.'s distinct-n)."""
    total, distinct = 0, set()
    for t in texts:
        words = t.casefold().split()
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        distinct.update(grams)
    return len(distinct) / total if total else 0.0


def creativity(candidates: Sequence[str], cand_emb: np.ndarray, existing: Sequence[str],
               existing_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(creativity, embedding novelty, distinct novelty) per candidate; embeddings are L2-normalised rows."""
    n = len(candidates)
    if cand_emb.shape[0] != n or existing_emb.shape[0] != len(existing):
        raise ConfigError("one embedding per text is needed")
    emb_nov = np.ones(n)
    dist_nov = np.zeros(n)
    for i in range(n):
        ref = np.concatenate([existing_emb, np.delete(cand_emb, i, axis=0)]) if n + len(existing) > 1 else None
        if ref is not None and len(ref):
            emb_nov[i] = float(np.clip(1.0 - np.max(ref @ cand_emb[i]), 0.0, 1.0))
        dist_nov[i] = distinct_novelty(candidates[i], [*existing, *candidates[:i], *candidates[i + 1:]])
    return (emb_nov + dist_nov) / 2.0, emb_nov, dist_nov


def _z(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def trade_off(ctr: np.ndarray, creative: np.ndarray, lam: float) -> np.ndarray:
    """The ranking score; ``ctr`` may be all-NaN (no prior model): creativity alone then ranks."""
    if not 0.0 <= lam <= 1.0:
        raise ConfigError(f"lambda must be in [0, 1], got {lam}")
    ctr = np.asarray(ctr, dtype=float)
    zc = np.zeros_like(ctr) if np.isnan(ctr).all() else _z(np.nan_to_num(ctr, nan=np.nanmean(ctr)))
    return (1.0 - lam) * zc + lam * _z(np.asarray(creative, dtype=float))


def rank(ctr: np.ndarray, creative: np.ndarray, lam: float) -> np.ndarray:
    """Candidate indices, best first (ties keep sampling order)."""
    return np.argsort(-trade_off(ctr, creative, lam), kind="stable")


def lambda_curve(ctr: np.ndarray, creative: np.ndarray, k: int,
                 grid: Sequence[float] = LAMBDA_GRID) -> list[dict[str, float]]:
    """Mean predicted CTR and creativity of the top ``k`` for each λ."""
    ctr, creative = np.asarray(ctr, dtype=float), np.asarray(creative, dtype=float)
    rows = []
    for lam in grid:
        top = rank(ctr, creative, float(lam))[:k]
        rows.append({"lambda": float(lam), "ctr": float(np.mean(ctr[top])), "creativity": float(np.mean(creative[top]))})
    return rows


def elbow(curve: Sequence[dict[str, float]]) -> float:
    """λ of the curve point farthest from the chord between its ends (axes scaled to [0, 1])."""
    pts = np.array([[r["creativity"], r["ctr"]] for r in curve], dtype=float)
    span = pts.max(0) - pts.min(0)
    pts = (pts - pts.min(0)) / np.where(span > 0, span, 1.0)
    a, b = pts[0], pts[-1]
    chord = b - a
    norm = np.linalg.norm(chord)
    if norm == 0:
        return float(curve[0]["lambda"])
    dist = np.abs(chord[0] * (pts[:, 1] - a[1]) - chord[1] * (pts[:, 0] - a[0])) / norm
    return float(curve[int(np.argmax(dist))]["lambda"])


def plot_curve(curve: Sequence[dict[str, float]], path, title: str) -> None:
    """The elbow plot: creativity against predicted CTR of the top k, one point per λ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    knee = elbow(curve)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    x = [r["creativity"] for r in curve]
    y = [100 * r["ctr"] for r in curve]
    ax.plot(x, y, "o-", color="tab:blue", ms=4)
    for r in curve:
        if r["lambda"] in (0.0, 1.0) or r["lambda"] == knee:
            ax.annotate(f"λ={r['lambda']:g}" + (" (elbow)" if r["lambda"] == knee else ""),
                        (r["creativity"], 100 * r["ctr"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("mean creativity of the top k (novelty, 0-1)")
    ax.set_ylabel("mean predicted CTR of the top k (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
