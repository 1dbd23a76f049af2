"""Prior CTRs for the paper replay: read a priors CSV, score with the ONNX model,
fit the honest development baseline (TF-IDF ridge on the train split only), or
build a controlled synthetic prior (exact or rank-reversed per test).

The replay never fits anything on the split it reports on. The baseline exists so
the replay can be developed and checked before the fine-tuned LLM prior is built;
its R² is reported beside every table that uses it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lola.data import priors as priors_csv
from lola.data.priors import write_priors_csv
from lola.data.upworthy import HeadlineTest, Package
from lola.errors import ConfigError, DataError
from lola.export import metrics
from lola.export.data import training_split
from lola.export.serve import OnnxPriorModel, read_card
from lola.replay.premise import reversed_ranking

__all__ = ["PriorTable", "read_priors_csv", "write_priors_csv", "score_with_model", "model_training_headlines",
           "fit_tfidf_ridge", "synthetic_priors", "prior_quality"]


@dataclass(frozen=True)
class PriorTable:
    """Prior CTR (and optional embedding) per headline text."""

    prior_ctr: dict[str, float]
    source: str
    embeddings: dict[str, np.ndarray] | None = None

    def lookup(self, headlines: Sequence[str]) -> np.ndarray:
        missing = [h for h in headlines if h not in self.prior_ctr]
        if missing:
            raise DataError(
                f"{len(missing)} headline(s) have no prior in {self.source}, e.g. {missing[0][:80]!r}; "
                "score every headline of --data (lola priors score) or pass --model"
            )
        return np.array([self.prior_ctr[h] for h in headlines], dtype=np.float64)


def read_priors_csv(path: str | Path) -> PriorTable:
    """A :class:`PriorTable` from a ``headline,prior_ctr`` CSV (:func:`lola.data.priors.read_priors_csv`)."""
    return PriorTable(priors_csv.read_priors_csv(path), source=str(path))


def first_test_weeks(packages: Sequence[Package]) -> dict[str, int]:
    """Each headline's earliest ``test_week`` (the week level the served prior adds)."""
    weeks: dict[str, int] = {}
    for p in packages:
        if p.test_week is not None and (p.headline not in weeks or p.test_week < weeks[p.headline]):
            weeks[p.headline] = p.test_week
    return weeks


def score_with_model(model_dir: str | Path, headlines: Sequence[str], want_embeddings: bool,
                     test_weeks: dict[str, int] | None = None) -> PriorTable:
    """Score headlines with the exported ONNX prior model (torch-free serving path).

    ``test_weeks`` (headline -> archive ``test_week``) lets a ``level_deviation`` model add
    the level of the headline's own week; an absolute-CTR model ignores it.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ConfigError(f"--model directory not found: {model_dir}")
    model = OnnxPriorModel(model_dir)
    texts = list(dict.fromkeys(headlines))
    weeks = [test_weeks.get(t) for t in texts] if test_weeks is not None else None
    emb = None
    if want_embeddings and model.embedding_dim:
        preds, vecs = model.predict_and_embed(texts, None, weeks)
        emb = {t: np.asarray(vecs[i], dtype=np.float64) for i, t in enumerate(texts)}
    else:
        preds = model.predict(texts, None, weeks)
    preds = np.asarray(preds, dtype=np.float64).reshape(-1)
    return PriorTable(dict(zip(texts, np.clip(preds, 0.0, 1.0).tolist())), source=f"model {model_dir}", embeddings=emb)


def model_training_headlines(model_dir: str | Path) -> tuple[frozenset[str] | None, str]:
    """Headlines an exported model was fitted on (its training split), and how that was found.

    The replay must tune n_aux on priors the model has not fitted: a model's priors on
    its own training headlines are better than on new ones (dev data: R² 0.29 vs 0.23),
    so tuning on them would over-trust the prior on the tests it reports on. The card
    names the training CSV and its sha256; the split is a function of that file. Returns
    ``(None, reason)`` when the file is not on this machine or has changed, so the caller
    can say the check was not possible instead of silently skipping it.
    """
    card, _ = read_card(model_dir)
    try:
        path, train = training_split(card.data)
    except DataError as exc:
        return None, f"not checked: {exc}"
    return frozenset(p.headline.strip() for p in train), f"train split of {path} (sha256 checked)"


# --------------------------------------------------------------------------- baseline


def fit_tfidf_ridge(train: Sequence[Package], alpha: float = 50.0):
    """TF-IDF (word 1-2 grams + char 3-5 grams) ridge regression of package CTR on headline text.

    Fitted only on the packages given (the train split). Rows are weighted by
    sqrt(impressions) so noisy tiny packages count less.
    """
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge

    texts = [p.headline for p in train]
    y = np.array([p.ctr for p in train])
    w = np.sqrt(np.array([p.impressions for p in train], dtype=float))
    words = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=3, sublinear_tf=True, max_features=60000)
    X = hstack([words.fit_transform(texts), chars.fit_transform(texts)]).tocsr()
    ridge = Ridge(alpha=alpha).fit(X, y, sample_weight=w)

    def predict(headlines: Sequence[str]) -> np.ndarray:
        Z = hstack([words.transform(headlines), chars.transform(headlines)]).tocsr()
        return np.clip(ridge.predict(Z), 1e-4, 1.0)

    return predict


def synthetic_priors(tests: Sequence[HeadlineTest], reversed_fraction: float, seed: int) -> dict[str, float]:
    """A controlled prior of two known qualities, to test an adaptive policy's premise.

    Every test gets its headlines' own archive CTRs as priors (an exact prior),
    except a seeded ``reversed_fraction`` of the tests, whose priors are the same
    CTRs in reversed rank order (the best headline gets the worst CTR, and so on):
    the prior is exactly right about the level and exactly wrong about the
    ranking. Which tests are reversed depends only on the test key and ``seed``.
    A headline found in several tests keeps the prior of the first one.
    """
    if not (0.0 <= reversed_fraction <= 1.0):
        raise ConfigError(f"reversed fraction must be in [0, 1], got {reversed_fraction!r}")
    out: dict[str, float] = {}
    for t in tests:
        key = f"{seed}/{t.test_id}/{t.eyecatcher_id}".encode()
        flip = np.random.default_rng(zlib.crc32(key)).random() < reversed_fraction
        ctrs = reversed_ranking(t.ctrs) if flip else t.ctrs
        for h, p in zip(t.headlines, ctrs):
            out.setdefault(h, float(p))
    return out


def prior_quality(tests: Sequence[HeadlineTest], priors: PriorTable) -> dict[str, float]:
    """Quality of a prior on headline tests: R² of CTR and top-1 accuracy (the paper's 'accuracy'),
    as :mod:`lola.export.metrics` defines them (ties split fairly)."""
    y = np.concatenate([t.ctrs for t in tests]) if tests else np.zeros(0)
    p = np.concatenate([priors.lookup(t.headlines) for t in tests]) if tests else np.zeros(0)
    return {
        "r2": metrics.r2(y, p) if len(y) else float("nan"),
        "top1_accuracy": metrics.top1_accuracy(tests, lambda t: priors.lookup(t.headlines)),
        "headlines": int(len(y)),
    }
