"""Per-headline CTR targets from Upworthy packages (read by :mod:`lola.data.upworthy`).

Targets
-------
A headline can be shown in several packages of one split (different images). Its
target is the pooled CTR ``sum(clicks) / sum(impressions)`` over those packages.
Headlines with fewer than ``min_impressions`` pooled impressions are dropped:
their CTR is mostly binomial noise. Each remaining headline carries a weight
``impressions / mean(impressions)`` (1 when weighting is off), so the MSE trusts
well-measured headlines more.

Scaling (``target="ctr"``, the paper's target)
-----------------------------------------------
The network is trained on a standardised target ``z = (ctr - mean) / std`` where
``mean`` and ``std`` are the (weighted) statistics of the *training* targets. A
raw CTR sits near 0.015, so an unscaled MSE gives vanishing gradients to a new
head. The scaling is stored in the model card, and serving maps back with
``ctr = mean + std * z`` and clamps to [0, 1].

Within-test deviation (``target="level_deviation"``)
----------------------------------------------------
The target is the headline's deviation from its test's mean CTR,
``d = ctr - test_mean`` (``test_mean``: impression-weighted CTR of every package of
the same ``clickability_test_id``), standardised the same way. Headlines that are
alone in their test (d = 0 by construction) are dropped. Serving adds back the
site-wide level of the test week (:class:`lola.export.level.WeekLevel`, fitted on
train packages, bandwidth chosen on tune): ``ctr = level(week) + mean + std * z``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from lola.data.upworthy import Package
from lola.errors import DataError
from lola.export.digest import file_sha256
from lola.export.text import clean_text, model_text

if TYPE_CHECKING:
    from lola.export.level import WeekLevel

__all__ = ["clean_text", "model_text", "build_examples", "TargetScaling", "HeadlineExamples"]


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
    #: archive ``test_week`` (YYYYWW) of the headline's earliest package, None when unknown
    test_weeks: tuple[int | None, ...] | None = None
    #: impression-weighted mean CTR of the headline's test(s), over the packages given
    test_means: np.ndarray | None = None
    #: distinct headlines in the headline's test
    test_sizes: np.ndarray | None = None

    @property
    def ctr(self) -> np.ndarray:
        return self.clicks / self.impressions

    @property
    def deviation(self) -> np.ndarray:
        """``ctr - test_mean``: what the ``level_deviation`` target standardises."""
        if self.test_means is None:
            raise DataError("these examples were built without test means")
        return self.ctr - self.test_means

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
            None if self.test_weeks is None else tuple(self.test_weeks[i] for i in index),
            None if self.test_means is None else self.test_means[index],
            None if self.test_sizes is None else self.test_sizes[index],
        )


def build_examples(
    packages: Sequence[Package],
    text_mode: str = "headline",
    min_impressions: int = 0,
    weight_by_impressions: bool = True,
) -> HeadlineExamples:
    """Pool packages per headline (sorted, so file order never matters) and filter by impressions."""
    test_totals: dict[str, list] = {}
    for p in packages:
        t = test_totals.setdefault(p.test_id, [0, 0, set()])
        t[0] += p.impressions
        t[1] += p.clicks
        t[2].add(p.headline.strip())
    pooled: dict[str, list] = {}
    for p in packages:
        key = p.headline.strip()
        # impressions, clicks, context, earliest test_week, sum(imps*test mean), test size
        row = pooled.setdefault(key, [0, 0, "", None, 0.0, 0])
        row[0] += p.impressions
        row[1] += p.clicks
        if not row[2]:
            row[2] = package_context(p)
        if p.test_week is not None and (row[3] is None or p.test_week < row[3]):
            row[3] = p.test_week
        total = test_totals[p.test_id]
        row[4] += p.impressions * (total[1] / total[0])
        row[5] = max(row[5], len(total[2]))
    keys = [k for k in sorted(pooled) if pooled[k][0] >= min_impressions]
    if not keys:
        raise DataError(f"no headline has >= {min_impressions} impressions; lower min_impressions")
    imps = np.array([pooled[k][0] for k in keys], dtype=np.float64)
    clicks = np.array([pooled[k][1] for k in keys], dtype=np.float64)
    weights = imps / imps.mean() if weight_by_impressions else np.ones_like(imps)
    contexts = tuple(pooled[k][2] for k in keys)
    texts = tuple(model_text(k, c, text_mode) for k, c in zip(keys, contexts))
    test_weeks = tuple(pooled[k][3] for k in keys)
    test_means = np.array([pooled[k][4] / pooled[k][0] for k in keys])
    test_sizes = np.array([pooled[k][5] for k in keys], dtype=np.int64)
    return HeadlineExamples(tuple(keys), contexts, texts, imps, clicks, weights, test_weeks, test_means, test_sizes)


@dataclass(frozen=True)
class TargetScaling:
    """``z = (ctr - mean) / std``; the inverse is :func:`lola.export.card.head_ctr`."""

    mean: float
    std: float
    kind: str = "standardize"
    #: ``level_deviation`` only: the week level added back at serving time
    level: "WeekLevel | None" = None

    @classmethod
    def fit(cls, ctr: np.ndarray, weights: np.ndarray) -> "TargetScaling":
        w = weights / weights.sum()
        mean = float(np.sum(w * ctr))
        std = float(np.sqrt(np.sum(w * (ctr - mean) ** 2)))
        if not np.isfinite(std) or std <= 0:
            raise DataError("training CTRs have zero variance; cannot scale targets")
        return cls(mean, std)

    @classmethod
    def fit_examples(cls, train: HeadlineExamples, target: str, level: "WeekLevel | None" = None) -> "TargetScaling":
        """Scaling of the training target: absolute CTR, or within-test deviation plus ``level``."""
        if target == "ctr":
            return cls.fit(train.ctr, train.weights)
        if target != "level_deviation":
            raise DataError(f"unknown target {target!r}")
        if level is None:
            raise DataError("the level_deviation target needs a week level")
        s = cls.fit(train.deviation, train.weights)
        return cls(s.mean, s.std, "level_deviation", level)

    def target(self, examples: HeadlineExamples) -> np.ndarray:
        """The standardised training target of ``examples``."""
        return self.forward(examples.deviation if self.kind == "level_deviation" else examples.ctr)

    def forward(self, ctr: np.ndarray) -> np.ndarray:
        return (np.asarray(ctr, dtype=np.float64) - self.mean) / self.std

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "mean": self.mean, "std": self.std}
        if self.level is not None:
            out["week_level"] = self.level.to_dict()
        return out


def training_csv(data: dict, override: str | Path | None = None) -> Path:
    """The CSV a model was trained on (``data`` is the card's or train state's ``data`` entry),
    checked against its recorded sha256: the train/tune/test split is a function of the file,
    so a later stage (readout, int8 calibration) on another file would not see the run's splits.
    ``override`` points at a copy elsewhere. Raises DataError."""
    recorded = str(override or data.get("path") or "")
    path = Path(recorded)
    if not recorded or not path.is_file():
        raise DataError(f"training data {recorded or '(none recorded)'} not found; pass --data")
    if data.get("sha256") and file_sha256(path) != data["sha256"]:
        raise DataError(f"{path} is not the file this model was trained on (sha256 differs from the record); "
                        "the train/tune split would not be the training run's")
    return path


def training_split(data: dict, override: str | Path | None = None) -> tuple[Path, list[Package]]:
    """The train-split packages of the CSV a model was trained on (checked by :func:`training_csv`):
    what a later stage must calibrate on (int8) or keep out of its tuning (the replay). Raises DataError."""
    from lola.data.upworthy import load_packages, split_packages

    path = training_csv(data, override)
    return path, split_packages(load_packages(path)[0])["train"]
