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

This module is build-time only (it imports scikit-learn); serving reads the JSON.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from lola.errors import DataError, ModelIntegrityError

log = logging.getLogger("lola.export.readout")

READOUT_FILE = "readout.json"
READOUT_FORMAT = 1
#: Ridge penalties on standardised embeddings (576 features for SmolLM2). The tune-MSE
#: optimum on the dev data was 30,000; the grid spans two decades either side.
RIDGE_ALPHAS = (1e2, 3e2, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5)


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


def fit_readout(model_dir: str | Path, data_csv: str | Path | None = None,
                alphas: tuple[float, ...] = RIDGE_ALPHAS, batch_size: int = 64) -> dict:
    """Fit ``readout.json`` for an exported model, rewrite its card; return the card's ``readout`` entry.

    ``data_csv`` defaults to the training data the card names; a file whose sha256
    differs from the card's is refused, because the split (and so the guarantee that
    no tune or test headline is fitted) is a function of the file.
    """
    from sklearn.linear_model import Ridge

    from lola.export.data import training_csv
    from lola.export.onnx_export import write_card
    from lola.export.serve import CARD_FILE, OnnxPriorModel

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
    train, tune = _split_examples(data_csv, card)

    log.info("readout: embedding %d train and %d tune headlines", len(train), len(tune))
    x_train = prior.embed(list(train.headlines), list(train.contexts)).astype(np.float64)
    z_tune, x_tune = prior.network_outputs(list(tune.headlines), list(tune.contexts))
    x_tune = x_tune.astype(np.float64)
    y_train, y_tune = _targets(train, target), _targets(tune, target)
    center = x_train.mean(axis=0)
    scale = x_train.std(axis=0)
    scale[scale < 1e-12] = 1.0  # a constant feature stays 0 after centring
    s_train, s_tune = (x_train - center) / scale, (x_tune - center) / scale

    grid = []
    for alpha in alphas:
        ridge = Ridge(alpha=alpha).fit(s_train, y_train, sample_weight=train.weights)
        mse = float(np.average((ridge.predict(s_tune) - y_tune) ** 2, weights=tune.weights))
        grid.append({"alpha": float(alpha), "tune_weighted_mse": mse})
    best = min(grid, key=lambda g: g["tune_weighted_mse"])
    ridge = Ridge(alpha=best["alpha"]).fit(s_train, y_train, sample_weight=train.weights)
    weights = ridge.coef_ / scale
    bias = float(ridge.intercept_ - center @ weights)
    # The network's own head on the same tune headlines, for the record.
    head_mse = float(np.average((prior.mean + prior.std * z_tune - y_tune) ** 2, weights=tune.weights))

    readout = {"format": READOUT_FORMAT, "kind": "ridge_on_embedding", "target": target,
               "weights": [float(w) for w in weights], "bias": bias}
    (model_dir / READOUT_FILE).write_text(json.dumps(readout))
    entry = {
        "file": READOUT_FILE,
        "kind": "ridge_on_embedding",
        "target": target,
        "alpha": best["alpha"],
        "chosen_by": "min impression-weighted MSE of the target on the tune split",
        "grid": grid,
        "network_head_tune_weighted_mse": head_mse,
        "train_headlines": len(train),
        "tune_headlines": len(tune),
        "embedding_variant": "fp32",
        "fit_seconds": round(time.monotonic() - started, 1),
    }
    card = json.loads((model_dir / CARD_FILE).read_text())
    card["readout"] = entry
    write_card(model_dir, card)  # re-hashes every file, readout.json included
    log.info("readout: alpha %g (tune MSE %.3g vs network head %.3g) in %.0f s", best["alpha"],
             best["tune_weighted_mse"], head_mse, entry["fit_seconds"])
    return entry
