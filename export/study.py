"""``lola priors readout-study``: every readout option on one cached forward pass, tune and test side by side.

Each option is fitted on the train split only (its penalty and calibration chosen on tune, as
``lola priors readout`` does) and scored on tune and on test, each as a paired difference
from the model's current readout (today's default) with a bootstrap 95 % interval over tests.
The study *reports* test; it never chooses on it: ``chosen`` names the servable option with
the best tune pairwise accuracy (then top-1), and nothing else reads the test figures.

Options: the ridge (MSE; must reproduce the served readout), ListNet and RankNet alone and
mixed with MSE, with ``slope`` or ``spread`` calibration; the ridge with ``slope``
calibration; a tune-weighted average of the ridge and the best ranking readout (still one
linear readout, so servable); and the ridge stacked with the TF-IDF ridge of
:mod:`lola.export.evaluate` (weight chosen on tune; measurement only, since serving has no
TF-IDF model).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from lola.data.upworthy import headline_tests, load_packages, split_packages
from lola.export.data import build_examples, training_csv
from lola.export.embcache import cached_outputs
from lola.export.evaluate import paired_metrics, tfidf_ridge
from lola.export.readout import ReadoutOptions, centred_bias, fit_ranking_readout, readout_data

log = logging.getLogger("lola.export.study")

#: (name, options) of the servable readouts the study fits besides the ridge.
RANKING_OPTIONS = (
    ("listnet+slope", ReadoutOptions("listnet", 0.0, "slope")),
    ("listnet(T=0.5)+slope", ReadoutOptions("listnet", 0.0, "slope", 0.5)),
    ("listnet+mse(0.5)", ReadoutOptions("listnet", 0.5, "none")),
    ("listnet+spread", ReadoutOptions("listnet", 0.0, "spread")),
    ("ranknet+slope", ReadoutOptions("ranknet", 0.0, "slope")),
    ("ranknet+mse(0.5)", ReadoutOptions("ranknet", 0.5, "none")),
)
BLEND_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
TFIDF_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0)


def _served(prior, weights: np.ndarray, bias: float, x: np.ndarray, weeks) -> np.ndarray:
    level = prior.level(weeks, len(x))
    return np.clip(level + x @ weights + bias, 0.0, 1.0)


def _tune_key(tests, pred: dict, base: dict) -> tuple[float, float]:
    m = paired_metrics(tests, pred, base, n_boot=1)
    return m["pairwise_accuracy_significant"]["a"], m["top1_accuracy"]["a"]


def options_calibration(data, served) -> dict:
    """How far the default ridge's within-test gaps are from the realised ones on tune (see ranking.calibration_scale)."""
    from lola.export.ranking import calibration_scale

    deviation = (data.x_tune * data.scale + data.center) @ served.readout_weights
    return {rule: calibration_scale(deviation, data.tune_groups, rule) for rule in ("slope", "spread")}


def run_study(model_dir: str | Path, data_csv: str | Path | None = None, cache: str | Path | None = None,
              variant: str = "fp32", n_boot: int = 2000) -> dict:
    from lola.export.serve import OnnxPriorModel

    started = time.monotonic()
    served = OnnxPriorModel(model_dir, provider="cpu", variant=variant)
    if served.readout_weights is None:
        raise ValueError(f"{model_dir} has no readout to compare with; run `lola priors readout` first")
    # readouts are fitted on fp32 embeddings (as `lola priors readout` does) and scored on the variant's;
    # the served model gives both when it is the fp32 one (one session, one tune embedding pass)
    prior = served
    fit_prior = served if variant == "fp32" else OnnxPriorModel(model_dir, provider="cpu", variant="fp32",
                                                                readout=False)
    card = prior.card
    data_csv = training_csv(card.data, data_csv)
    cache = Path(cache) if cache else None
    data = readout_data(fit_prior, data_csv, card, cache)
    splits = split_packages(load_packages(data_csv)[0])
    hp = card.hyperparameters
    test_all = build_examples(splits["test"], hp["text_mode"], 0, False)
    _, x_test = cached_outputs(prior, list(test_all.headlines), list(test_all.contexts), cache)
    tune_all = build_examples(splits["tune"], hp["text_mode"], 0, False)
    if prior is fit_prior:  # readout_data embedded these very texts with this network
        x_tune = data.emb_tune
    else:
        _, x_tune = cached_outputs(prior, list(tune_all.headlines), list(tune_all.contexts), cache)
    raw = {"tune": (x_tune.astype(np.float64), tune_all, headline_tests(splits["tune"])),
           "test": (x_test.astype(np.float64), test_all, headline_tests(splits["test"]))}

    def predictions(weights, bias) -> dict[str, dict[str, float]]:
        return {split: dict(zip(ex.headlines, _served(prior, weights, bias, x, list(ex.test_weeks))))
                for split, (x, ex, _) in raw.items()}

    # today's default: the served readout; every option is paired against it
    base = predictions(served.readout_weights, served.readout_bias)
    options: dict[str, dict] = {"default (served ridge)": {"pred": base, "servable": True}}
    linear: dict[str, tuple[np.ndarray, float]] = {"default (served ridge)": (served.readout_weights,
                                                                              served.readout_bias)}
    # the default ridge with its within-test gaps calibrated on tune: same ranking, other spread
    for rule, gamma in options_calibration(data, served).items():
        w, b = served.readout_weights * gamma, 0.0
        b = float(centred_bias(data, w * data.scale) - data.center @ w)
        linear[f"ridge+{rule}"] = (w, b)
        options[f"ridge+{rule}"] = {"pred": predictions(w, b), "servable": True, "gamma": gamma}
    for name, opts in RANKING_OPTIONS:
        t = time.monotonic()
        coef, bias, entry = fit_ranking_readout(data, opts)
        weights = coef / data.scale
        bias = float(bias - data.center @ weights)
        linear[name] = (weights, bias)
        options[name] = {"pred": predictions(weights, bias), "servable": True, "l2": entry["l2"],
                         "gamma": entry["gamma"], "fit_seconds": round(time.monotonic() - t, 1)}
        log.info("study: %s fitted in %.0f s", name, time.monotonic() - t)

    # blend of the default ridge with the best ranking readout on tune (one linear readout)
    best_rank = max((n for n, _ in RANKING_OPTIONS),
                    key=lambda n: _tune_key(raw["tune"][2], options[n]["pred"]["tune"], base["tune"]))
    blends = []
    for lam in BLEND_WEIGHTS:
        w = (1 - lam) * linear["default (served ridge)"][0] + lam * linear[best_rank][0]
        b = (1 - lam) * linear["default (served ridge)"][1] + lam * linear[best_rank][1]
        pred = predictions(w, b)
        blends.append((_tune_key(raw["tune"][2], pred["tune"], base["tune"]), lam, pred))
    key, lam, pred = max(blends, key=lambda item: item[0])
    options[f"blend ridge + {best_rank}"] = {"pred": pred, "servable": True, "weight": lam}

    # stacked with TF-IDF (fitted on train; weight chosen on tune): measurement only
    train_examples = build_examples(splits["train"], hp["text_mode"], hp["min_impressions"], True)
    tfidf = {split: dict(zip(ex.headlines, tfidf_ridge(train_examples, None if split == "tune" else
                                                       build_examples(splits["tune"], hp["text_mode"],
                                                                      hp["min_impressions"], True), ex)[0]))
             for split, (_, ex, _) in raw.items()}
    stacks = []
    for lam in TFIDF_WEIGHTS:
        pred = {s: {h: base[s][h] + lam * tfidf[s][h] for h in base[s]} for s in raw}
        stacks.append((_tune_key(raw["tune"][2], pred["tune"], base["tune"]), lam, pred))
    key, lam, pred = max(stacks, key=lambda item: item[0])
    options["default + TF-IDF stack"] = {"pred": pred, "servable": False, "weight": lam}

    report = {"model": str(model_dir), "variant": variant, "options": {},
              "calibration_of_default": options_calibration(data, served)}
    for name, opt in options.items():
        row = {k: v for k, v in opt.items() if k != "pred"}
        for split, (_, _, tests) in raw.items():
            row[split] = paired_metrics(tests, opt["pred"][split], base[split], n_boot=n_boot)
        report["options"][name] = row
    servable = [n for n, o in report["options"].items() if o["servable"]]
    report["chosen_on_tune"] = max(servable, key=lambda n: (
        report["options"][n]["tune"]["pairwise_accuracy_significant"]["a"],
        report["options"][n]["tune"]["top1_accuracy"]["a"]))
    report["seconds"] = round(time.monotonic() - started, 1)
    report["n_tests"] = {s: len(t) for s, (_, _, t) in raw.items()}
    return report


def format_study(report: dict) -> str:
    lines = [f"readout study of {report['model']} ({report['variant']}); each cell: value (paired diff vs default "
             "[95 % bootstrap interval])",
             f"{'option':<34}{'tune top-1':>26}{'tune pairwise':>26}{'test top-1':>26}{'test pairwise':>26}"]
    for name, row in report["options"].items():
        cells = []
        for split in ("tune", "test"):
            for metric in ("top1_accuracy", "pairwise_accuracy_significant"):
                d = row[split][metric]
                cells.append(f"{d['a']:.3f} ({d['diff']:+.3f} [{d['lo']:+.3f},{d['hi']:+.3f}])")
        lines.append(f"{name[:33]:<34}" + "".join(f"{c:>26}" for c in cells))
    lines.append(f"chosen on tune: {report['chosen_on_tune']}")
    return "\n".join(lines)
