"""Per-headline CTR targets from Upworthy packages (read by :mod:`lola.data.upworthy`).

Targets
-------
A headline can be shown in several packages of one split (different images). Its
target is the pooled CTR ``sum(clicks) / sum(impressions)`` over those packages.
Headlines with fewer than ``min_impressions`` pooled impressions are dropped:
their CTR is mostly binomial noise. Each remaining headline carries a weight
``impressions / mean(impressions)`` (1 when weighting is off), so the MSE trusts
well-measured headlines more.

Scaling
-------
The network is trained on a standardised target ``z = (ctr - mean) / std`` where
``mean`` and ``std`` are the (weighted) statistics of the *training* targets. A
raw CTR sits near 0.015, so an unscaled MSE gives vanishing gradients to a new
head. The scaling is stored in the model card, and serving maps back with
``ctr = mean + std * z`` and clamps to [0, 1].
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lola.data.upworthy import Package
from lola.errors import DataError
from lola.export.text import clean_text, model_text

__all__ = ["clean_text", "model_text", "build_examples", "TargetScaling", "HeadlineExamples", "file_sha256"]


def package_context(p: Package) -> str:
    """Context for ``headline_context``: the lede, else the excerpt."""
    return p.lede if clean_text(p.lede) else p.excerpt


@dataclass(frozen=True)
class HeadlineExamples:
    """Per-headline training or evaluation rows (see module docstring)."""

    headlines: tuple[str, ...]
    contexts: tuple[str, ...]
    texts: tuple[str, ...]
    impressions: np.ndarray
    clicks: np.ndarray
    weights: np.ndarray

    @property
    def ctr(self) -> np.ndarray:
        return self.clicks / self.impressions

    def __len__(self) -> int:
        return len(self.headlines)

    def subset(self, index: np.ndarray) -> "HeadlineExamples":
        index = np.asarray(index)
        return HeadlineExamples(
            tuple(self.headlines[i] for i in index),
            tuple(self.contexts[i] for i in index),
            tuple(self.texts[i] for i in index),
            self.impressions[index],
            self.clicks[index],
            self.weights[index],
        )


def build_examples(
    packages: Sequence[Package],
    text_mode: str = "headline",
    min_impressions: int = 0,
    weight_by_impressions: bool = True,
) -> HeadlineExamples:
    """Pool packages per headline (sorted, so file order never matters) and filter by impressions."""
    pooled: dict[str, list] = {}
    for p in packages:
        key = p.headline.strip()
        row = pooled.setdefault(key, [0, 0, ""])
        row[0] += p.impressions
        row[1] += p.clicks
        if not row[2]:
            row[2] = package_context(p)
    keys = [k for k in sorted(pooled) if pooled[k][0] >= min_impressions]
    if not keys:
        raise DataError(f"no headline has >= {min_impressions} impressions; lower min_impressions")
    imps = np.array([pooled[k][0] for k in keys], dtype=np.float64)
    clicks = np.array([pooled[k][1] for k in keys], dtype=np.float64)
    weights = imps / imps.mean() if weight_by_impressions else np.ones_like(imps)
    contexts = tuple(pooled[k][2] for k in keys)
    texts = tuple(model_text(k, c, text_mode) for k, c in zip(keys, contexts))
    return HeadlineExamples(tuple(keys), contexts, texts, imps, clicks, weights)


@dataclass(frozen=True)
class TargetScaling:
    """``z = (ctr - mean) / std``; inverse ``ctr = mean + std * z``."""

    mean: float
    std: float
    kind: str = "standardize"

    @classmethod
    def fit(cls, ctr: np.ndarray, weights: np.ndarray) -> "TargetScaling":
        w = weights / weights.sum()
        mean = float(np.sum(w * ctr))
        std = float(np.sqrt(np.sum(w * (ctr - mean) ** 2)))
        if not np.isfinite(std) or std <= 0:
            raise DataError("training CTRs have zero variance; cannot scale targets")
        return cls(mean, std)

    def forward(self, ctr: np.ndarray) -> np.ndarray:
        return (np.asarray(ctr, dtype=np.float64) - self.mean) / self.std

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return self.mean + self.std * np.asarray(z, dtype=np.float64)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "mean": self.mean, "std": self.std}


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
