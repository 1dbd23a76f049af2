"""Refit the prior model's linear readout on every training headline (``lola priors readout``).

Why: the LoRA fine-tune is the expensive stage, so on a CPU it sees a subset of the
training headlines once (the ``quick`` profile: 3,200 of ~5,600), and its score head
is what that subset taught it. The exported graph also returns each headline's
embedding (the attention-masked mean of the fine-tuned model's last hidden state).
A ridge regression from that embedding to the training target, fitted on *all*
training headlines, is a cheap second stage (one forward pass per headline, a
closed-form fit) that ranks headlines inside a test better than the network's own
head. Measured on the development data (README, "Prior model"): with the quick
``level_deviation`` model, tune-split pairwise accuracy 59.8% -> 64.9% and top-1
30.3% -> 34.3%, with the penalty chosen on tune by MSE.

What is fitted: ``y ~ embedding @ weights + bias`` with sample weights (impressions /
mean impressions, as in training), where ``y`` is the model's training target in CTR
units: the within-test deviation for ``level_deviation`` models (the week level is
added back at serving, as for the network's own head) or the absolute CTR for
``ctr`` models. Embeddings are standardised with train-split statistics before the
fit and the scaling is folded into ``weights``/``bias``, so serving is one dot product.
The ridge penalty is chosen on the tune split by impression-weighted MSE of ``y``
(never on test). The result is ``readout.json`` beside the ONNX files, hashed in the
model card like every other file; :class:`lola.export.serve.OnnxPriorModel` applies it
to the fp32/int8/fp16 embedding alike.

Other objectives (ListNet, RankNet, mixed with MSE) and a calibration of the within-test gaps
are :class:`ReadoutOptions` (:mod:`lola.export.ranking`); they stay one linear readout, so serving
is the same. Measured against this ridge in docs/priors-ranking.md: none ranks better on both splits.

This module is build-time only (it imports scikit-learn); serving reads the JSON.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lola.errors import ConfigError, DataError, ModelIntegrityError
from lola.export.card import ModelCard, head_ctr
from lola.export.config import CALIBRATIONS, OBJECTIVES
from lola.export.ranking import calibration_scale, fit_linear

log = logging.getLogger("lola.export.readout")

READOUT_FILE = "readout.json"
READOUT_FORMAT = 1
#: Ridge penalties on standardised embeddings (576 features for SmolLM2). The tune-MSE
#: optimum on the dev data was 30,000; the grid spans two decades either side.
RIDGE_ALPHAS = (1e2, 3e2, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5)
#: L2 penalties of the ranking readouts (:mod:`lola.export.ranking`), per unit of the mean loss. The
#: ridge's tune optimum (alpha 10,000 on a summed loss over ~4,850 unit-mean weights) is about 2 here.
L2_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)


def _targets(examples, target: str) -> np.ndarray:
    return examples.deviation if target == "level_deviation" else examples.ctr


def _split_examples(data_csv: Path, card: ModelCard):
    """Train and tune headlines exactly as the training run built them, but without its subset limit."""
    from lola.export.config import TrainConfig
    from lola.export.train import prepare_data

    prepared = prepare_data(data_csv, TrainConfig(**{**card.hyperparameters, "train_limit": None}))
    tune = prepared.tune
    if card.target == "level_deviation":
        # Alone in its test a headline's deviation is 0 by construction: as in training, not scored.
        tune = tune.subset(np.flatnonzero(tune.test_sizes >= 2))
    if len(tune) < 1:
        raise DataError(f"{data_csv}: no tune headlines after filtering; need at least 1 to choose the readout penalty")
    return prepared.train, tune


@dataclass(frozen=True)
class ReadoutOptions:
    """How the readout is fitted (``lola priors readout``): the objective, its mix with MSE and the
    calibration. ``mse`` is the ridge of the module docstring (penalty chosen on tune MSE);
    ``listnet``/``ranknet`` go through :func:`lola.export.ranking.fit_linear`, with the L2 penalty
    chosen on tune pairwise accuracy over significant pairs (never on test). ``calibrate`` then
    rescales the readout's within-test gaps by a factor fitted on tune (any objective)."""

    objective: str = "mse"
    mix: float = 0.0
    calibrate: str = "none"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.calibrate not in CALIBRATIONS:
            raise ConfigError(f"--calibrate must be one of {', '.join(CALIBRATIONS)}, got {self.calibrate!r}")
        if not 0.0 <= self.mix <= 1.0:
            raise ConfigError(f"--mix must be in [0, 1], got {self.mix}")
        if not 0.0 < self.temperature <= 100.0:
            raise ConfigError(f"--temperature must be in (0, 100], got {self.temperature}")
        if self.objective != "mse" and self.calibrate == "none" and self.mix == 0.0:
            raise ConfigError(f"a pure {self.objective} readout has no CTR scale; use --calibrate slope or spread")

    @property
    def is_ridge(self) -> bool:
        return self.objective == "mse"


@dataclass(frozen=True)
class ReadoutData:
    """Standardised embeddings and targets of the train and tune splits, with their tests."""

    train: object  # HeadlineExamples
    tune_scored: object  # tune headlines with >= min_impressions (MSE selection)
    x_train: np.ndarray  # standardised
    x_tune: np.ndarray  # standardised, every tune headline of a test
    tune_headlines: tuple[str, ...]
    center: np.ndarray
    scale: np.ndarray
    y_train: np.ndarray  # target in CTR units
    target_std: float
    train_groups: object  # TestGroups over train rows
    tune_groups: object  # TestGroups over tune rows
    tune_tests: list
    z_tune: np.ndarray
    emb_tune: np.ndarray  # the raw (float64) embedding of every tune headline, rows as tune_headlines


def readout_data(prior, data_csv: Path, card: ModelCard, cache: Path | None = None) -> ReadoutData:
    """Embed (or read from ``cache``) every train headline and every headline of a tune test."""
    from lola.data.upworthy import headline_tests, load_packages, split_packages
    from lola.export.data import build_examples
    from lola.export.embcache import cached_outputs
    from lola.export.ranking import build_groups

    target = card.target
    train, tune_scored = _split_examples(data_csv, card)
    splits = split_packages(load_packages(data_csv)[0])
    tune_all = build_examples(splits["tune"], card.hyperparameters["text_mode"], 0, False)
    log.info("readout: embedding %d train and %d tune headlines", len(train), len(tune_all))
    _, x_train = cached_outputs(prior, list(train.headlines), list(train.contexts), cache)
    z_tune, x_tune = cached_outputs(prior, list(tune_all.headlines), list(tune_all.contexts), cache)
    x_train, x_tune = x_train.astype(np.float64), x_tune.astype(np.float64)
    center = x_train.mean(axis=0)
    scale = x_train.std(axis=0)
    scale[scale < 1e-12] = 1.0  # a constant feature stays 0 after centring
    y_train = _targets(train, target)
    mean = float(np.average(y_train, weights=train.weights))
    target_std = float(np.sqrt(np.average((y_train - mean) ** 2, weights=train.weights))) or 1.0
    tune_tests = headline_tests(splits["tune"])
    return ReadoutData(
        train, tune_scored, (x_train - center) / scale, (x_tune - center) / scale, tune_all.headlines, center, scale,
        y_train, target_std,
        build_groups(headline_tests(splits["train"]), {h: i for i, h in enumerate(train.headlines)}),
        build_groups(tune_tests, {h: i for i, h in enumerate(tune_all.headlines)}),
        tune_tests, z_tune, x_tune)


def tune_ranking(data: ReadoutData, deviation: np.ndarray) -> dict:
    """Top-1 and pairwise accuracy (significant pairs) of per-tune-headline predictions."""
    from lola.export.metrics import pairwise_accuracy, top1_accuracy

    by = dict(zip(data.tune_headlines, deviation))
    predict = lambda t: np.array([by[h.strip()] for h in t.headlines])  # noqa: E731
    pairwise, _ = pairwise_accuracy(data.tune_tests, predict)
    return {"top1_accuracy": top1_accuracy(data.tune_tests, predict), "pairwise_accuracy_significant": pairwise}


def centred_bias(data: ReadoutData, coef: np.ndarray) -> float:
    """The bias that keeps the weighted mean prediction on train at the target's weighted mean."""
    return float(np.average(data.y_train, weights=data.train.weights)
                 - np.average(data.x_train @ coef, weights=data.train.weights))


def fit_ranking_readout(data: ReadoutData, options: ReadoutOptions, l2_grid=L2_GRID) -> tuple[np.ndarray, float, dict]:
    """(weights on standardised features, bias, card entry) of a listnet/ranknet readout; penalty chosen on tune."""

    y = (data.y_train - np.average(data.y_train, weights=data.train.weights)) / data.target_std
    grid, best, start = [], None, None
    for l2 in sorted(l2_grid, reverse=True):  # strongest penalty first; each fit warm-starts the next
        fit = fit_linear(data.x_train, options.objective, data.train_groups, y, data.train.weights, options.mix,
                         l2, options.temperature, data.target_std, init=start)
        start = np.concatenate([fit.coef, [fit.intercept]])
        metrics = tune_ranking(data, data.x_tune @ fit.coef)
        grid.append({"l2": float(l2), **metrics, "converged": fit.converged, "iterations": fit.iterations})
        key = (metrics["pairwise_accuracy_significant"], metrics["top1_accuracy"])
        if best is None or key > best[0]:
            best = (key, fit)
    fit = best[1]
    scores_tune = data.x_tune @ fit.coef
    gamma = (calibration_scale(scores_tune, data.tune_groups, options.calibrate) if options.calibrate != "none"
             else data.target_std)
    coef = gamma * fit.coef
    bias = centred_bias(data, coef)
    entry = {"objective": options.objective, "mix": fit.mix, "temperature": options.temperature,
             "calibrate": options.calibrate, "gamma": float(gamma), "l2": fit.l2,
             "chosen_by": "max tune pairwise accuracy on significant pairs (then top-1); calibration on tune",
             "grid": grid}
    return coef, bias, entry


def fit_readout(model_dir: str | Path, data_csv: str | Path | None = None,
                alphas: tuple[float, ...] = RIDGE_ALPHAS, batch_size: int = 64,
                options: ReadoutOptions | None = None, cache: str | Path | None = None) -> dict:
    """Fit ``readout.json`` for an exported model, rewrite its card; return the card's ``readout`` entry.

    ``data_csv`` defaults to the training data the card names; a file whose sha256
    differs from the card's is refused, because the split (and so the guarantee that
    no tune or test headline is fitted) is a function of the file. ``cache`` is an
    embedding cache file (:mod:`lola.export.embcache`); ``options`` the objective.
    """
    from sklearn.linear_model import Ridge

    from lola.export.data import training_csv
    from lola.export.onnx_export import write_card
    from lola.export.serve import CARD_FILE, OnnxPriorModel

    options = options or ReadoutOptions()
    model_dir = Path(model_dir)
    started = time.monotonic()
    prior = OnnxPriorModel(model_dir, provider="cpu", variant="fp32", batch_size=batch_size, readout=False)
    card = prior.card
    if prior.embedding_dim is None:
        raise ModelIntegrityError(f"{model_dir}: this export has no embedding output to fit a readout on")
    try:
        data_csv = training_csv(card.data, data_csv)
    except DataError as exc:
        raise DataError(f"readout: {exc}") from None
    target = card.target
    data = readout_data(prior, data_csv, card, Path(cache) if cache else None)
    scored_rows = np.array([data.tune_headlines.index(h) for h in data.tune_scored.headlines], dtype=np.int64)
    s_tune, y_tune = data.x_tune[scored_rows], _targets(data.tune_scored, target)
    z_tune = data.z_tune[scored_rows]

    extra: dict = {"kind": "ridge_on_embedding", "chosen_by": "min impression-weighted MSE of the target on the "
                   "tune split"}
    if options.is_ridge:
        grid = []
        for alpha in alphas:
            ridge = Ridge(alpha=alpha).fit(data.x_train, data.y_train, sample_weight=data.train.weights)
            mse = float(np.average((ridge.predict(s_tune) - y_tune) ** 2, weights=data.tune_scored.weights))
            grid.append({"alpha": float(alpha), "tune_weighted_mse": mse})
        best = min(grid, key=lambda g: g["tune_weighted_mse"])
        ridge = Ridge(alpha=best["alpha"]).fit(data.x_train, data.y_train, sample_weight=data.train.weights)
        coef, intercept = ridge.coef_, float(ridge.intercept_)
        gamma = calibration_scale(data.x_tune @ coef, data.tune_groups, options.calibrate)
        if options.calibrate != "none":
            coef = gamma * coef
            intercept = centred_bias(data, coef)
        extra.update(alpha=best["alpha"], grid=grid, calibrate=options.calibrate, gamma=gamma)
    else:
        coef, intercept, ranking = fit_ranking_readout(data, options)
        extra = {"kind": f"{options.objective}_on_embedding", **ranking, "alpha": None}
    weights = coef / data.scale
    bias = float(intercept - data.center @ weights)
    tune_mse = float(np.average((s_tune @ coef + intercept - y_tune) ** 2, weights=data.tune_scored.weights))
    # The network's own head on the same tune headlines, for the record.
    head_mse = float(np.average((head_ctr(prior.mean, prior.std, z_tune) - y_tune) ** 2, weights=data.tune_scored.weights))

    readout = {"format": READOUT_FORMAT, "kind": extra["kind"], "target": target,
               "weights": [float(w) for w in weights], "bias": bias}
    (model_dir / READOUT_FILE).write_text(json.dumps(readout))
    entry = {
        "file": READOUT_FILE,
        "target": target,
        **extra,
        "tune_weighted_mse": tune_mse,
        "tune_ranking": tune_ranking(data, data.x_tune @ coef),
        "network_head_tune_weighted_mse": head_mse,
        "train_headlines": len(data.train),
        "tune_headlines": len(data.tune_scored),
        "embedding_variant": "fp32",
        "fit_seconds": round(time.monotonic() - started, 1),
    }
    card = json.loads((model_dir / CARD_FILE).read_text())
    card["readout"] = entry
    write_card(model_dir, card)  # re-hashes every file, readout.json included
    log.info("readout: %s (tune MSE %.3g vs network head %.3g) in %.0f s", extra["kind"], tune_mse, head_mse,
             entry["fit_seconds"])
    return entry
