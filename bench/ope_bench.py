"""``lola bench ope``: do the 95 % intervals of SNIPS and DR for ``uniform`` cover the truth?

Each seeded run is a closed loop through the worker's own event processing
(:class:`lola.stream.processor.ShardProcessor`, the decision kernel and its logged
propensities): ``--experiments`` experiments of ``--arms`` variants with known CTRs, a
randomised logging policy (``llm_ts`` with a ``min_traffic`` floor, priors = true CTR plus
noise), decision requests in batches, and for each decision an impression and a Bernoulli
click at the true CTR, all as event records. The decisions and events are then joined by
:func:`lola.stream.decision_log.join_stream` (the path ``lola evaluate`` takes on the topics) and
``uniform`` is evaluated; its true value is the mean true CTR over the logged rounds'
experiments (the expected value of ``uniform`` on the logged contexts: what IPS is unbiased
for). Reported: the share of runs whose interval covers the truth, per estimator and per
interval method (the studentised bootstrap of ``lola evaluate`` and obp's percentile one, on
the same streams and resamples), the side of each miss and the mean width.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import typer

from lola.bench.output import JSON_OPTION, emit


@dataclass
class ClosedLoop:
    """What one closed-loop run logged: event and decision records, the processor, the truth."""

    events: list[dict]
    decisions: list[dict]
    proc: Any
    ctr: np.ndarray
    priors: dict[str, dict[str, float]]


def closed_loop(seed: int, experiments: int, arms: int, rounds: int, min_traffic: float = 0.05,
                n_aux: float = 200.0, batch: int = 100, prior_noise: float = 0.02, stats_interval_s: float = 10.0,
                t0: float = 1.0) -> ClosedLoop:
    """A seeded ad server around the worker's processor (module docstring); also the report tests' data."""
    from lola.stream.processor import ShardProcessor
    from lola.stream.shard import ProcessorConfig

    rng = np.random.default_rng(seed)
    ctr = rng.uniform(0.02, 0.2, (experiments, arms))
    proc = ShardProcessor(0, ProcessorConfig(stats_interval_s=stats_interval_s))
    events: list[dict] = []
    decisions: list[dict] = []
    off = 0

    def feed(evs: list[dict], now: float):
        nonlocal off
        recs = [(off + i, e["experiment_id"].encode(), orjson.dumps(e)) for i, e in enumerate(evs)]
        off += len(recs)
        events.extend(e for e in evs if e["type"] != "decision_request")
        return proc.process(recs, now=now)

    feed([{"type": "variant", "experiment_id": f"e{e}", "variant_id": f"v{k}", "text": f"t{k}",
           **({"settings": {"policy": "llm_ts", "n_aux": n_aux, "min_traffic": min_traffic}} if k == 0 else {})}
          for e in range(experiments) for k in range(arms)], t0)
    priors: dict[str, dict[str, float]] = {f"e{e}": {} for e in range(experiments)}
    for e in range(experiments):
        for k in range(arms):
            priors[f"e{e}"][f"v{k}"] = prior = float(np.clip(ctr[e, k] + rng.normal(0, prior_noise), 0.001, 0.999))
            proc.apply_prior(f"e{e}", f"v{k}", prior)
    req = 0
    for step in range(max(rounds * experiments // batch, 1)):
        now = t0 + 1.0 + step
        exps = rng.integers(0, experiments, batch)
        out = feed([{"type": "decision_request", "experiment_id": f"e{e}", "request_id": f"r{req + i}"}
                    for i, e in enumerate(exps.tolist())], now)
        req += batch
        outcomes = []
        for _, value in out.decisions:
            d = orjson.loads(value)
            decisions.append(d)
            base = {"experiment_id": d["experiment_id"], "variant_id": d["variant_id"], "ts": now}
            outcomes.append({"type": "impression", "event_id": "i" + d["request_id"], "request_id": d["request_id"], **base})
            if rng.random() < ctr[int(d["experiment_id"][1:]), int(d["variant_id"][1:])]:
                outcomes.append({"type": "click", "event_id": "c" + d["request_id"], "request_id": d["request_id"], **base})
        feed(outcomes, now)
    return ClosedLoop(events, decisions, proc, ctr, priors)


def one_run(seed: int, experiments: int, arms: int, rounds: int, resamples: int, min_traffic: float) -> dict:
    """One closed loop, ``uniform`` evaluated with each interval of :data:`INTERVALS` (same resample seed)."""
    from lola.evaluate.estimators import INTERVALS, Feedback, delta_se, evaluate, round_values
    from lola.evaluate.policies import matrix, policy_table, reward_model
    from lola.stream.decision_log import join_stream

    loop = closed_loop(seed, experiments, arms, rounds, min_traffic)
    log = join_stream(loop.events, loop.decisions)
    snapshots = {e: {"arms": {v: {"prior": p} for v, p in arms_.items()}} for e, arms_ in loop.priors.items()}
    pi = matrix(log, policy_table(log, "uniform", None))
    fb = Feedback(log.action, log.reward, log.pscore, pi, reward_model(log, snapshots))
    est = {iv: evaluate(fb, resamples, seed, interval=iv) for iv in INTERVALS}
    truth = float(np.mean([loop.ctr[int(e[1:])].mean() for e in log.experiment]))
    # the propensity check: IPS with each round's reward replaced by its true CTR has no click noise and
    # is unbiased for the truth exactly when the logged propensities are the policy's real probabilities
    true_ctr = np.array([loop.ctr[int(e[1:]), int(log.variants[e][a][1:])] for e, a in zip(log.experiment, log.action)])
    return {"truth": truth, "logged": float(log.reward.mean()), "estimates": est,
            "se": {n: delta_se(*round_values(fb, n)) for n in est[INTERVALS[0]]},
            "mean_weight": float(fb.weights.mean()), "noise_free_ips": float((fb.weights * true_ctr).mean()),
            "covered": {iv: {n: bool(v["ci"][0] <= truth <= v["ci"][1]) for n, v in e.items()} for iv, e in est.items()}}


def run_benchmark(runs: int, experiments: int, arms: int, rounds: int, resamples: int, seed: int,
                  min_traffic: float = 0.05) -> dict:
    """Coverage, error and interval width per estimator; ``intervals`` per interval method (the studentised
    bootstrap, the default of ``lola evaluate``, and obp's percentile bootstrap as the peer)."""
    results = [one_run(seed + r, experiments, arms, rounds, resamples, min_traffic) for r in range(runs)]
    intervals = list(results[0]["covered"])
    names = list(results[0]["covered"][intervals[0]])
    first = results[0]["estimates"][intervals[0]]

    def err(r: dict, n: str) -> float:
        return r["estimates"][intervals[0]][n]["value"] - r["truth"]

    per_interval = {}
    for iv in intervals:
        covered = {n: sum(r["covered"][iv][n] for r in results) for n in names}
        per_interval[iv] = {
            "coverage": {n: c / runs for n, c in covered.items()},
            # truth above the interval (the estimate too low) and below it, in runs
            "misses_truth_above": {n: sum(r["truth"] > r["estimates"][iv][n]["ci"][1] for r in results) for n in names},
            "misses_truth_below": {n: sum(r["truth"] < r["estimates"][iv][n]["ci"][0] for r in results) for n in names},
            "mean_ci_width": {n: float(np.mean([r["estimates"][iv][n]["ci"][1] - r["estimates"][iv][n]["ci"][0]
                                                for r in results])) for n in names},
        }
    return {
        "benchmark": "OPE interval coverage, target uniform, logging llm_ts", "min_traffic": min_traffic,
        "runs": runs, "first_seed": seed, "experiments": experiments, "arms": arms, "rounds_per_experiment": rounds,
        "resamples": resamples, "nominal": 0.95, "estimators": list(first),
        "intervals": per_interval,
        "mean_error": {n: float(np.mean([err(r, n) for r in results])) for n in names},
        "sd_error": {n: float(np.std([err(r, n) for r in results])) for n in names},
        "mean_abs_error": {n: float(np.mean([abs(err(r, n)) for r in results])) for n in names},
        # > 0: a low estimate comes with a small standard error (rare heavily weighted clicks), which
        # is what makes the percentile interval miss on one side
        "corr_error_se": {n: float(np.corrcoef([err(r, n) for r in results], [r["se"][n] for r in results])[0, 1])
                          for n in names} if runs > 2 else None,
        "propensity_check": {
            "mean_weight": float(np.mean([r["mean_weight"] for r in results])),
            "noise_free_ips_bias": float(np.mean([r["noise_free_ips"] - r["truth"] for r in results])),
            "noise_free_ips_bias_se": float(np.std([r["noise_free_ips"] - r["truth"] for r in results]) / np.sqrt(runs)),
        },
        "mean_truth": float(np.mean([r["truth"] for r in results])),
        "mean_logged_reward": float(np.mean([r["logged"] for r in results])),
    }


def register(app: typer.Typer) -> None:
    """Add ``lola bench ope`` and ``lola bench ope-heldout``."""
    register_heldout(app)

    @app.command("ope")
    def ope_cmd(
        json_out: bool = JSON_OPTION,
        runs: int = typer.Option(50, min=1, max=10_000, help="Seeded runs."),
        experiments: int = typer.Option(5, min=1, max=1000, help="Experiments per run."),
        arms: int = typer.Option(4, min=2, max=64, help="Variants per experiment."),
        rounds: int = typer.Option(2000, min=100, max=1_000_000, help="Decisions per experiment (on average)."),
        resamples: int = typer.Option(500, min=10, max=100_000, help="Bootstrap resamples per interval."),
        seed: int = typer.Option(0, help="First seed; run r uses seed + r."),
        min_traffic: float = typer.Option(0.05, min=0.0, max=0.99, help="Logging policy's floor per variant "
                                          "(>= 1/arms: uniform logging)."),
    ) -> None:
        """Coverage of the OPE intervals on closed-loop streams with a known truth (JSON)."""
        out = run_benchmark(runs, experiments, arms, rounds, resamples, seed, min_traffic)
        emit(out, json_out, "; ".join(f"{iv}: " + ", ".join(f"{n} {100 * c:.0f} %" for n, c in v["coverage"].items())
                                      for iv, v in out["intervals"].items()) + f" of {runs} runs")


def register_heldout(app: typer.Typer) -> None:
    """Add ``lola bench ope-heldout`` (lola.evaluate.heldout)."""

    @app.command("ope-heldout")
    def heldout_cmd(
        data: Path = typer.Option(..., "--data", help="Upworthy package CSV (split by the project's salt)."),
        priors: Path = typer.Option(..., "--priors", help="headline,prior_ctr CSV (lola priors score, or "
                                                          "lola replay baseline-prior)."),
        json_out: bool = JSON_OPTION,
        rounds: int = typer.Option(200, min=10, max=1_000_000, help="Logged rounds per shown headline."),
        resamples: int = typer.Option(200, min=10, max=100_000, help="Bootstrap resamples per interval."),
        max_tests: int = typer.Option(400, min=1, help="Test-split tests used at most (first by id)."),
        seed: int = typer.Option(0, help="Log and bootstrap seed."),
    ) -> None:
        """Coverage of DR's interval for headlines held out of the log, prior as the reward model (JSON)."""
        from lola.data.priors import read_priors_csv
        from lola.data.upworthy import headline_tests, load_packages, split_packages
        from lola.evaluate.heldout import study

        packages, _ = load_packages(data)
        splits = split_packages(packages)
        out = study(headline_tests(splits["tune"]), headline_tests(splits["test"], 3)[:max_tests],
                    read_priors_csv(priors), rounds, resamples, seed)
        out["priors"] = str(priors)
        emit(out, json_out, f"{out['held_out_headlines']} held-out headlines: DR bootstrap covers "
                            f"{out['coverage_dr_bootstrap']:.0%}, widened {out['coverage_widened']:.0%}")
