"""Side-by-side evaluation of CTR priors on a held-out split (never the split used to tune).

Predictors, all fit on the *train* split of the same by-component split:

* ``finetuned``: the exported ONNX model (served by :class:`OnnxPriorModel`);
* ``embedding_ridge``: the paper's section 3.2 recipe for CTR (appendix F): mean-pooled
  last hidden states of the *same base model* (not fine-tuned), standardised, then
  ridge regression; alpha picked on the tune split;
* ``tfidf_ridge``: word 1-2-gram TF-IDF + ridge; alpha picked on the tune split;
* ``constant``: the impression-weighted mean training CTR.

When ``split="test"``, ridge alphas are chosen on ``tune``; nothing is fit or chosen
on the test split. When ``split="tune"`` alphas are chosen by 5-fold CV on train.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from lola.data.upworthy import headline_tests, load_packages, split_packages
from lola.export.data import HeadlineExamples, build_examples
from lola.export.digest import file_sha256
from lola.export.metrics import (mae, paired_bootstrap, pairwise_accuracy, per_test_pairs, per_test_spread,
                                 per_test_top1, r2, significant_pairs, top1_accuracy)

log = logging.getLogger("lola.export.evaluate")

PAPER_REFERENCE = {"model": "LoRA fine-tuned Llama-3-8B (LOLA appendix F / section 4.2)", "r2": 0.315,
                   "top1_accuracy": 0.4655, "pairwise_accuracy_significant": 0.834,
                   "note": "paper's pairwise figure is its pairwise classifier on significant pairs (section 3.3)"}
RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)


def score_predictions(pred_by_headline: dict[str, float], scored: HeadlineExamples, tests, alpha: float = 0.05) -> dict:
    """R2/MAE over ``scored`` headlines, top-1 and pairwise accuracy over ``tests``."""
    y_pred = np.array([pred_by_headline[h] for h in scored.headlines])
    predict: Callable = lambda t: np.array([pred_by_headline[h] for h in t.headlines])  # noqa: E731
    pair_acc, n_pairs = pairwise_accuracy(tests, predict, alpha)
    return {
        "r2": r2(scored.ctr, y_pred),
        "mae": mae(scored.ctr, y_pred),
        "top1_accuracy": top1_accuracy(tests, predict),
        "pairwise_accuracy_significant": pair_acc,
        "n_headlines": len(scored),
        "n_tests": len(tests),
        "n_significant_pairs": n_pairs,
    }


def _fit_ridge(x_train, y_train, w_train, x_select, y_select, folds: bool):
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold

    best = None
    for a in RIDGE_ALPHAS:
        if folds:
            errs = []
            for tr, va in KFold(5, shuffle=True, random_state=0).split(x_train):
                m = Ridge(alpha=a).fit(x_train[tr], y_train[tr], sample_weight=w_train[tr])
                errs.append(np.mean((m.predict(x_train[va]) - y_train[va]) ** 2))
            err = float(np.mean(errs))
        else:
            m = Ridge(alpha=a).fit(x_train, y_train, sample_weight=w_train)
            err = float(np.mean((m.predict(x_select) - y_select) ** 2))
        if best is None or err < best[0]:
            best = (err, a)
    return Ridge(alpha=best[1]).fit(x_train, y_train, sample_weight=w_train), best[1]


def tfidf_ridge(train: HeadlineExamples, select: HeadlineExamples | None, target: HeadlineExamples):
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x_train = vec.fit_transform(train.texts)
    x_select = vec.transform(select.texts) if select is not None else None
    model, alpha = _fit_ridge(x_train, train.ctr, train.weights, x_select,
                              select.ctr if select is not None else None, folds=select is None)
    return model.predict(vec.transform(target.texts)), {"alpha": alpha}


def base_embeddings(base_ref: dict, texts, max_length: int, batch_size: int = 32) -> np.ndarray:
    """Mean-pooled last hidden state of the (not fine-tuned) base model; torch, CPU or CUDA."""
    import torch
    from transformers import AutoModel

    from lola.export.base import BaseRef, load_tokenizer, quiet_transformers

    quiet_transformers()
    ref = BaseRef(**base_ref)
    tokenizer = load_tokenizer(ref)
    model = AutoModel.from_pretrained(ref.directory, dtype=torch.float32, **ref.load_kwargs()).eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    texts = list(texts)
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            index = order[start : start + batch_size]
            enc = tokenizer([texts[i] for i in index], truncation=True, max_length=max_length,
                            padding=True, return_tensors="pt").to(device)
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out[index] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)).float().cpu().numpy()
    return out


def embedding_ridge(base_ref, max_length, train, select, target, limit: int, seed: int = 0):
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    if len(train) > limit:
        train = train.subset(np.sort(rng.choice(len(train), size=limit, replace=False)))
    if select is not None and len(select) > limit // 2:
        select = select.subset(np.sort(rng.choice(len(select), size=limit // 2, replace=False)))
    texts = list(train.texts) + (list(select.texts) if select is not None else []) + list(target.texts)
    emb = base_embeddings(base_ref, texts, max_length)
    n_tr, n_se = len(train), len(select) if select is not None else 0
    scaler = StandardScaler().fit(emb[:n_tr])
    x = scaler.transform(emb)
    model, alpha = _fit_ridge(x[:n_tr], train.ctr, train.weights, x[n_tr : n_tr + n_se] if n_se else None,
                              select.ctr if select is not None else None, folds=select is None)
    return model.predict(x[n_tr + n_se :]), {"alpha": alpha, "train_headlines_embedded": n_tr}


def finetuned_predictions(prior, examples: HeadlineExamples, cache: Path | None = None) -> dict[str, np.ndarray]:
    """The served CTRs of ``examples`` (``finetuned``) from one pass of the network; with a readout,
    also the network's own head on that same pass (``finetuned_network_head``): what the readout adds.
    ``cache``: an embedding cache file (:mod:`lola.export.embcache`)."""
    from lola.export.embcache import cached_outputs

    texts, contexts, weeks = list(examples.headlines), list(examples.contexts), list(examples.test_weeks)
    if prior.embedding_dim is None:  # an export without the embedding output: the network's head only
        return {"finetuned": prior.predict(texts, contexts, weeks)}
    z, embedding = cached_outputs(prior, texts, contexts, cache)
    out = {"finetuned": prior.to_ctr(z, weeks, embedding)}
    if prior.readout_weights is not None:
        out["finetuned_network_head"] = prior.to_ctr(z, weeks)
    return out


def paired_metrics(tests, pred: dict[str, float], base: dict[str, float], alpha: float = 0.05,
                   n_boot: int = 2000, seed: int = 0) -> dict:
    """Top-1, pairwise accuracy on significant pairs and within-test spread of ``pred`` minus ``base``
    (headline -> CTR), paired over the same tests, each with a bootstrap 95 % interval over tests."""
    pairs = [significant_pairs(t, alpha) for t in tests]
    a_fn = lambda t: np.array([pred[h.strip()] for h in t.headlines])  # noqa: E731
    b_fn = lambda t: np.array([base[h.strip()] for h in t.headlines])  # noqa: E731
    ca, total = per_test_pairs(tests, a_fn, alpha, pairs)
    cb, _ = per_test_pairs(tests, b_fn, alpha, pairs)
    with np.errstate(invalid="ignore", divide="ignore"):
        pa, pb = ca / total, cb / total
    return {
        "top1_accuracy": paired_bootstrap(per_test_top1(tests, a_fn), per_test_top1(tests, b_fn), None, n_boot, seed),
        "pairwise_accuracy_significant": paired_bootstrap(pa, pb, total, n_boot, seed),
        "within_test_spread": paired_bootstrap(per_test_spread(tests, a_fn), per_test_spread(tests, b_fn), None,
                                               n_boot, seed),
        "bootstrap": {"resamples": n_boot, "seed": seed, "over": "tests", "interval": "percentile 95 %"},
    }


def evaluate(
    model_dir: str | Path,
    data_csv: str | Path,
    split: str = "test",
    variant: str = "fp32",
    embed_train_limit: int = 3000,
    embedding_baseline: bool = True,
    alpha: float = 0.05,
    baseline: str | Path | None = None,
    baseline_variant: str = "fp32",
    cache: str | Path | None = None,
    baseline_cache: str | Path | None = None,
) -> dict:
    from lola.export.serve import OnnxPriorModel

    prior = OnnxPriorModel(model_dir, variant=variant)
    card = prior.card
    hp = card.hyperparameters
    text_mode, min_imp = hp["text_mode"], hp["min_impressions"]

    packages, report = load_packages(data_csv)
    splits = split_packages(packages)
    train = build_examples(splits["train"], text_mode, min_imp, True)
    select = build_examples(splits["tune"], text_mode, min_imp, True) if split == "test" else None
    everything = build_examples(splits[split], text_mode, 0, False)  # every headline a test may need
    scored = build_examples(splits[split], text_mode, min_imp, False)  # R2/MAE: well-measured headlines
    tests = headline_tests(splits[split])

    same_data = file_sha256(data_csv) == card.data.get("sha256")
    results, details = {}, {}

    t = time.monotonic()
    preds = finetuned_predictions(prior, everything, Path(cache) if cache else None)
    for name, pred in preds.items():
        results[name] = score_predictions(dict(zip(everything.headlines, pred)), scored, tests, alpha)
    paired = None
    if baseline is not None:
        # The same tests scored by the baseline (today's default): differences are paired per test.
        base_prior = OnnxPriorModel(baseline, variant=baseline_variant)
        base_pred = finetuned_predictions(base_prior, everything, Path(baseline_cache) if baseline_cache else None)
        base_by = dict(zip(everything.headlines, base_pred["finetuned"]))
        paired = {"baseline": str(baseline), "baseline_variant": base_prior.variant,
                  "baseline_model_version": base_prior.model_version,
                  "finetuned_minus_baseline": paired_metrics(tests, dict(zip(everything.headlines, preds["finetuned"])),
                                                             base_by, alpha)}
    details["finetuned"] = {"variant": prior.variant, "provider": prior.provider, "model_version": prior.model_version,
                            "target": card.target, "seconds": round(time.monotonic() - t, 1),
                            "readout": (card.readout.kind if prior.readout_weights is not None
                                        else "network head")}
    if "finetuned_network_head" in preds:
        details["finetuned_network_head"] = {"readout": "network head (no readout.json)"}

    # The week level alone: how much of R2 is the site-wide level, which no headline text carries.
    from lola.export.level import fit_package_level, week_index

    level, level_info = fit_package_level(splits["train"], splits["tune"] if split == "test" else None)
    pred = level(np.array([week_index(w) for w in everything.test_weeks]))
    results["week_level"] = score_predictions(dict(zip(everything.headlines, pred)), scored, tests, alpha)
    details["week_level"] = {k: level_info[k] for k in ("bandwidth_weeks", "chosen_by")}

    if embedding_baseline:
        t = time.monotonic()
        pred, info = embedding_ridge(card.base_ref, hp["max_length"], train, select, everything, embed_train_limit)
        results["embedding_ridge"] = score_predictions(dict(zip(everything.headlines, pred)), scored, tests, alpha)
        details["embedding_ridge"] = {**info, "seconds": round(time.monotonic() - t, 1)}

    t = time.monotonic()
    pred, info = tfidf_ridge(train, select, everything)
    results["tfidf_ridge"] = score_predictions(dict(zip(everything.headlines, pred)), scored, tests, alpha)
    details["tfidf_ridge"] = {**info, "seconds": round(time.monotonic() - t, 1)}

    constant = float(np.sum(train.weights * train.ctr) / np.sum(train.weights))
    results["constant"] = score_predictions({h: constant for h in everything.headlines}, scored, tests, alpha)
    details["constant"] = {"value": constant}

    return {
        "split": split,
        "data": str(data_csv),
        "data_matches_training_data": same_data,
        "load": report.summary(),
        "text_mode": text_mode,
        "min_impressions_for_r2": min_imp,
        "significance_alpha": alpha,
        "predictors": results,
        "paired_vs_baseline": paired,
        "details": details,
        "paper_reference": PAPER_REFERENCE,
    }


def format_table(report: dict) -> str:
    lines = [f"split={report['split']} text_mode={report['text_mode']}",
             f"{'predictor':<24}{'R2':>8}{'MAE':>10}{'top1':>8}{'pairwise':>10}"]
    for name, m in report["predictors"].items():
        lines.append(f"{name:<24}{m['r2']:>8.3f}{m['mae']:>10.5f}{m['top1_accuracy']:>8.3f}"
                     f"{m['pairwise_accuracy_significant']:>10.3f}")
    paired = report.get("paired_vs_baseline")
    if paired:
        lines.append(f"finetuned minus baseline {paired['baseline']} ({paired['baseline_variant']}), "
                     "paired over tests, bootstrap 95 % interval:")
        for name, d in paired["finetuned_minus_baseline"].items():
            if name != "bootstrap":
                lines.append(f"  {name:<30}{d['diff']:+.4f}  [{d['lo']:+.4f}, {d['hi']:+.4f}]")
    return "\n".join(lines)
