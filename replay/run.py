"""Orchestration of the replay: load, prior, tune on tune tests, report on test tests.

The one place that touches the policy kernels is :func:`simulate_clicks`, which
hands whole batches of experiments to ``lola.kernels.simulate`` (the fused
select/update loop built from the worker's own policy functions).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from lola.replay import protocol as P
from lola.replay.priors import (
    PriorTable,
    first_test_weeks,
    model_training_headlines,
    prior_quality,
    read_priors_csv,
    score_with_model,
)
from lola.replay.report import Improvement, improvement_table, results_rows
from lola.replay.sim import simulate_batch
from lola.data.upworthy import HeadlineTest, headline_tests, load_packages, split_packages
from lola.errors import ConfigError
from lola.export.projection import DEFAULT_DIM, SCALE_EPS, fit_projection
from lola.stream.warm_start import WARM_START_WEIGHT

ProgressFn = Callable[[int], None]


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


# --------------------------------------------------------------------------- kernels


def simulate_clicks(
    batch: P.ReplayBatch,
    spec: P.PolicySpec,
    tau: int,
    reps: int,
    seed: int,
    workers: int = 1,
) -> np.ndarray:
    """Total clicks of every test in every rep: float64[n_tests, reps], via lola.kernels.

    Every policy and grid point sees the same click worlds (common random numbers;
    see :mod:`lola.replay.sim`).
    """
    return simulate_batch(batch, spec, tau, reps, seed, workers)


# --------------------------------------------------------------------------- tuning


@dataclass
class TuneRecord:
    best: P.PolicySpec
    grid_scores: list[tuple[dict, float]]


def tune_policy(
    batch: P.ReplayBatch,
    name: str,
    tau: int,
    reps: int,
    seed: int,
    workers: int,
    tuned_so_far: Mapping[str, Mapping[str, float]] | None = None,
    progress: ProgressFn | None = None,
) -> TuneRecord:
    """Grid search on the tune tests: the spec with the most mean clicks (common random numbers)."""
    specs = P.grid(name, tuned_so_far)
    scores = []
    for spec in specs:
        clicks = simulate_clicks(batch, spec, tau, reps, seed, workers)
        scores.append(float(clicks.mean()))
        if progress:
            progress(1)
    best = int(np.argmax(scores))
    return TuneRecord(specs[best], [(s.as_dict(), v) for s, v in zip(specs, scores)])


def grid_size(policies: Sequence[str]) -> int:
    return sum(len(P.grid(p)) for p in policies)


# --------------------------------------------------------------------------- data


@dataclass
class ReplayData:
    tune: P.ReplayBatch
    report: P.ReplayBatch
    description: dict
    prior_quality: dict


#: The columns of :func:`_features_fn`'s rows that hold the reduced text (model embedding or TF-IDF).
Z_COLUMNS = slice(2, None)


def _features_fn(prior: PriorTable, train_texts: Sequence[str], dim: int = DEFAULT_DIM):
    """LLM-LinUCB arm features: [1, prior CTR (scaled), the model's projected embedding or SVD of TF-IDF].

    The projection is fitted on the warm-start (train) texts only, with the one recipe the model
    artifact stores for the worker (:func:`lola.export.projection.fit_projection`).
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    if prior.embeddings:
        keys = [t for t in train_texts if t in prior.embeddings]
        proj = fit_projection(np.stack([prior.embeddings[t] for t in keys]), dim)

        def reduced(texts):
            return proj.transform(np.stack([prior.embeddings[t] for t in texts]))

        source = "model embeddings (lola.export.projection, fitted on the train texts)"
    else:
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2 if len(train_texts) > 200 else 1, sublinear_tf=True)
        X = vec.fit_transform(train_texts)
        dim = max(1, min(dim, X.shape[1] - 1, X.shape[0] - 1))
        svd = TruncatedSVD(n_components=dim, random_state=0).fit(X)
        scale = svd.transform(vec.transform(list(train_texts))).std(axis=0) + SCALE_EPS

        def reduced(texts):
            return svd.transform(vec.transform(texts)) / scale / math.sqrt(dim)

        source = "TF-IDF SVD (no model embeddings)"

    def features(texts):
        return np.column_stack([np.ones(len(texts)), prior.lookup(texts) * 50.0, reduced(list(texts))])

    return features, source


def load_replay_data(
    data: Path,
    priors_csv: Path | None,
    model_dir: Path | None,
    tune_data: Path | None,
    want_features: bool,
) -> ReplayData:
    if (priors_csv is None) == (model_dir is None):
        raise ConfigError("give exactly one of --priors CSV or --model DIR")
    packages, report_load = load_packages(data)
    if tune_data is not None:
        tune_packages, tune_load = load_packages(tune_data)
        tune_tests = headline_tests(tune_packages)
        report_tests = headline_tests(packages)
        warm_packages = tune_packages
        split = f"tune on all tests of {tune_data}, report on all tests of {data}"
        report_ids = {t.test_id for t in report_tests}
        overlap = report_ids & {t.test_id for t in tune_tests}
        if overlap:
            raise ConfigError(f"--tune-data shares {len(overlap)} test id(s) with --data (e.g. {sorted(overlap)[0]}); they must be disjoint")
    else:
        parts = split_packages(packages)
        tune_tests = headline_tests(parts["tune"])
        report_tests = headline_tests(parts["test"])
        warm_packages = parts["train"]
        split = f"by-component split of {data} (lola.data.upworthy, 60/20/20): tune on 'tune', report on 'test'"
    fitted_check = "not applicable (--priors)"
    tune_dropped = report_seen = 0
    if model_dir is not None:
        fitted, fitted_check = model_training_headlines(model_dir)
        if fitted is not None:
            def seen(t: HeadlineTest) -> bool:
                return any(h.strip() in fitted for h in t.headlines)

            kept = [t for t in tune_tests if not seen(t)]
            tune_dropped = len(tune_tests) - len(kept)
            tune_tests = kept
            report_seen = sum(1 for t in report_tests if seen(t))
    if not tune_tests or not report_tests:
        raise ConfigError(f"need headline tests on both sides; got {len(tune_tests)} to tune and {len(report_tests)} to report"
                          + (f" ({tune_dropped} tune test(s) dropped: the model was trained on their headlines)" if tune_dropped else ""))
    all_headlines = sorted({h for t in (*tune_tests, *report_tests) for h in t.headlines} | ({p.headline for p in warm_packages} if model_dir else set()))
    if priors_csv is not None:
        prior = read_priors_csv(priors_csv)
    else:
        weeks = first_test_weeks((*packages, *(tune_packages if tune_data is not None else ())))
        prior = score_with_model(model_dir, all_headlines, want_embeddings=want_features, test_weeks=weeks)
    for t in (*tune_tests, *report_tests):
        prior.lookup(t.headlines)  # a missing prior is a clear DataError before any work
    features = None
    feature_source = None
    warm_texts = sorted({p.headline for p in warm_packages})
    warm_used = 0
    if want_features:
        # The text projection needs only the train texts; the warm start also needs
        # their priors, and uses the train packages that have one.
        features, feature_source = _features_fn(prior, warm_texts)
        warm_used = sum(1 for p in warm_packages if p.headline in prior.prior_ctr)
    tune_batch = P.build_batch(tune_tests, prior.lookup, features)
    report_batch = P.build_batch(report_tests, prior.lookup, features)
    if want_features:
        A0, b0 = _linucb_warm_start(warm_packages, features, prior)
        tune_batch = _with_warm(tune_batch, A0, b0)
        report_batch = _with_warm(report_batch, A0, b0)
    description = {
        "data": str(data),
        "tune_data": str(tune_data) if tune_data else None,
        "split": split,
        "tune_tests": len(tune_tests),
        "report_tests": len(report_tests),
        "model_training_headlines": fitted_check,
        "tune_tests_dropped_seen_in_training": tune_dropped,
        "report_tests_seen_in_training": report_seen,
        "report_arms_mean": float(np.mean([t.n_arms for t in report_tests])),
        "prior_source": prior.source,
        "linucb_features": feature_source,
        "linucb_warm_start_packages": warm_used,
        "rows_skipped": len(report_load.skipped),
    }
    quality = {"tune": prior_quality(tune_tests, prior), "report": prior_quality(report_tests, prior)}
    return ReplayData(tune_batch, report_batch, description, quality)


def _linucb_warm_start(packages, features, prior: PriorTable, weight: float = WARM_START_WEIGHT):
    """Algorithm 4 line 1: A = I + sum x x^T, b = sum x r over historical impressions.

    Each package contributes its impressions and clicks, scaled by ``weight`` so
    years of history (millions of impressions) do not freeze the online model;
    the weight is fixed here and documented, not tuned on the report tests.
    """
    texts = [p.headline for p in packages if p.headline in prior.prior_ctr]
    if not texts:
        return None, None
    X = features(texts)
    n = np.array([p.impressions for p in packages if p.headline in prior.prior_ctr], dtype=np.float64)
    c = np.array([p.clicks for p in packages if p.headline in prior.prior_ctr], dtype=np.float64)
    A0 = (X * (weight * n)[:, None]).T @ X
    b0 = X.T @ (weight * c)
    return A0, b0


def _with_warm(batch: P.ReplayBatch, A0, b0) -> P.ReplayBatch:
    return P.ReplayBatch(batch.test_ids, batch.n_arms, batch.ctr, batch.prior, batch.features, A0, b0)


# --------------------------------------------------------------------------- the whole run


@dataclass
class ReplayResult:
    taus: tuple[int, ...]
    policies: tuple[str, ...]
    scores: dict[tuple[int, str], np.ndarray]
    improvements: list[Improvement]
    hyperparameters: dict[str, dict[str, dict]]
    settings: dict
    tuning: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {
            "results": results_rows(self.scores),
            "improvements": [i.as_dict() for i in self.improvements],
            "hyperparameters": self.hyperparameters,
            "settings": self.settings,
            "one_setting_for_all_horizons": one_setting_for_all_horizons(self.tuning),
        }


TUNE_ORDER = ("E&C", "UCB", "PureLLM", "LOLA", "LOLA-EB", "TS", "LLM-TS", "LLM-LinUCB")


def one_setting_for_all_horizons(tuning: Mapping[str, Mapping[str, list]], name: str = "LOLA") -> dict | None:
    """The grid point of ``name`` that loses least, on average over tau, against the per-tau best on tune.

    The replay tunes per horizon (the paper's protocol), but a worker does not know how long an
    experiment will run and needs one setting. Each grid point's tune score at each tau is divided
    by that tau's best, and the point with the highest mean ratio wins; its mean shortfall is
    reported, so a reader sees what one setting costs. Uses the tuning runs already made (no
    extra simulation). ``None`` when ``name`` was not tuned at every tau.
    """
    taus = sorted(tuning, key=int)
    if not taus or any(name not in tuning[t] for t in taus):
        return None
    keys = [tuple(sorted(params.items())) for params, _ in tuning[taus[0]][name]]
    by_tau = []
    for t in taus:
        scores = {tuple(sorted(params.items())): value for params, value in tuning[t][name]}
        best = max(scores.values())
        by_tau.append({k: scores[k] / best for k in keys})
    mean_ratio = {k: float(np.mean([r[k] for r in by_tau])) for k in keys}
    chosen = max(keys, key=lambda k: mean_ratio[k])
    return {
        "policy": name,
        "params": dict(chosen),
        "taus": [int(t) for t in taus],
        "tune_shortfall_pct_mean": round(100.0 * (1.0 - mean_ratio[chosen]), 3),
        "tune_shortfall_pct_by_tau": {t: round(100.0 * (1.0 - r[chosen]), 3) for t, r in zip(taus, by_tau)},
    }


def run_replay(
    rd: ReplayData,
    taus: Sequence[int],
    policies: Sequence[str],
    reps: int,
    tune_reps: int,
    seed: int,
    workers: int,
    progress_factory=None,
) -> ReplayResult:
    """Tune every policy per tau on the tune tests, then report on the report tests."""
    started = time.perf_counter()
    order = [p for p in TUNE_ORDER if p in policies]
    if "LOLA-EB" in order and "LOLA" not in order:
        order.insert(order.index("LOLA-EB"), "LOLA")  # EB is tuned around LOLA's choice
    # Progress in units of tau: a grid point's cost grows linearly with the horizon.
    total = sum(int(t) for t in taus) * (grid_size(order) + len(policies))
    bar = progress_factory(total) if progress_factory else None
    hyper: dict[str, dict[str, dict]] = {}
    tuning: dict[str, dict] = {}
    scores: dict[tuple[int, str], np.ndarray] = {}
    tune_seed = seed + 7919  # different worlds for tuning than for the report
    for tau in taus:
        tuned: dict[str, dict] = {}
        chosen: dict[str, P.PolicySpec] = {}
        advance = (lambda n, _t=int(tau): bar(n * _t)) if bar else None
        for name in order:
            rec = tune_policy(rd.tune, name, tau, tune_reps, tune_seed, workers, tuned, advance)
            chosen[name] = rec.best
            tuned[name] = dict(rec.best.params)
            tuning.setdefault(str(tau), {})[name] = rec.grid_scores
        hyper[str(tau)] = {name: chosen[name].as_dict() for name in policies}
        for name in policies:
            clicks = simulate_clicks(rd.report, chosen[name], tau, reps, seed, workers)
            scores[(tau, name)] = P.clicks_per_period(clicks, tau).mean(axis=1)
            if advance:
                advance(1)
    improvements = improvement_table(scores, taus, policies)
    settings = dict(
        rd.description,
        prior_quality=rd.prior_quality,
        reps=reps,
        tune_reps=tune_reps,
        seed=seed,
        workers=workers,
        taus=list(taus),
        score="clicks per test per period = total clicks / tau, averaged over reps then tests",
        t_test="two-sided paired t-test across report tests (scipy.stats.ttest_rel)",
        wall_seconds=round(time.perf_counter() - started, 1),
    )
    return ReplayResult(tuple(taus), tuple(policies), scores, improvements, hyper, settings, tuning)
