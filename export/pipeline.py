"""``lola priors build-default``: train, merge, export, validate, refit the readout, record tune-split metrics."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from lola.export.config import TrainConfig

log = logging.getLogger("lola.export.pipeline")


def training_dir_for(out: Path) -> Path:
    """Where build-default keeps the adapter and checkpoints: a sibling ``<out>-train`` folder."""
    return out.with_name(out.name + "-train")


def tune_metrics(model_dir: Path, data_csv: Path) -> dict:
    """Fine-tuned model on the tune split (the test split stays untouched for `lola priors eval`).

    ``tune`` is what serving predicts (the readout when the model has one); with a readout,
    ``tune_network_head`` is the network's own head on the same pass, for comparison.
    """
    from lola.data.upworthy import headline_tests, load_packages, split_packages
    from lola.export.data import build_examples
    from lola.export.evaluate import finetuned_predictions, score_predictions
    from lola.export.serve import OnnxPriorModel

    prior = OnnxPriorModel(model_dir, variant="fp32")
    hp = prior.card.hyperparameters
    packages, _ = load_packages(data_csv)
    tune = split_packages(packages)["tune"]
    everything = build_examples(tune, hp["text_mode"], 0, False)
    scored = build_examples(tune, hp["text_mode"], hp["min_impressions"], False)
    tests = headline_tests(tune)
    names = {"finetuned": "tune", "finetuned_network_head": "tune_network_head"}
    return {names[name]: score_predictions(dict(zip(everything.headlines, pred)), scored, tests)
            for name, pred in finetuned_predictions(prior, everything).items()}


def build_default(data_csv: Path, out: Path, config: TrainConfig, base: str | None = None) -> dict:
    from lola.export.onnx_export import export_model, update_metrics
    from lola.export.readout import fit_readout
    from lola.export.train import train

    started = time.monotonic()
    train_dir = training_dir_for(Path(out))
    train(data_csv, train_dir, config, base=base)
    card = export_model(train_dir, out, ("int8",), int8_optional=True)
    # The fine-tune saw a subset; the readout is refitted on every training headline.
    fit_readout(out, data_csv)
    metrics = tune_metrics(Path(out), Path(data_csv))
    metrics["build_seconds_total"] = round(time.monotonic() - started, 1)
    card = update_metrics(out, metrics)
    log.info("built %s in %.0f s", out, time.monotonic() - started)
    return card
