"""``lola bench ope``: do the 95 % intervals of SNIPS and DR for ``uniform`` cover the truth?

Each seeded run is a closed loop through the worker's own event processing
(:class:`lola.stream.processor.ShardProcessor`, the decision kernel and its logged
propensities): ``--experiments`` experiments of ``--arms`` variants with known CTRs, a
randomised logging policy (``llm_ts`` with a ``min_traffic`` floor, priors = true CTR plus
noise), decision requests in batches, and for each decision an impression and a Bernoulli
click at the true CTR, all as event records. The decisions and events are then joined by
:func:`lola.stream.decision_log.join_stream` (the path ``lola evaluate`` takes on the topics) and
``uniform`` is evaluated; its true value is the mean true CTR over the logged rounds'
experiments. Reported: the share of runs whose interval covers the truth, per estimator.
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
    from lola.evaluate.estimators import Feedback, evaluate
    from lola.evaluate.policies import matrix, policy_table, reward_model
    from lola.stream.decision_log import join_stream

    loop = closed_loop(seed, experiments, arms, rounds, min_traffic)
    log = join_stream(loop.events, loop.decisions)
    snapshots = {e: {"arms": {v: {"prior": p} for v, p in arms_.items()}} for e, arms_ in loop.priors.items()}
    pi = matrix(log, policy_table(log, "uniform", None))
    fb = Feedback(log.action, log.reward, log.pscore, pi, reward_model(log, snapshots))
    est = evaluate(fb, resamples, seed)
    truth = float(np.mean([loop.ctr[int(e[1:])].mean() for e in log.experiment]))
    return {"truth": truth, "logged": float(log.reward.mean()), "estimates": est,
            "covered": {n: bool(v["ci"][0] <= truth <= v["ci"][1]) for n, v in est.items()}}


def run_benchmark(runs: int, experiments: int, arms: int, rounds: int, resamples: int, seed: int,
                  min_traffic: float = 0.05) -> dict:
    results = [one_run(seed + r, experiments, arms, rounds, resamples, min_traffic) for r in range(runs)]
    names = list(results[0]["covered"])
    return {
        "benchmark": "OPE interval coverage, target uniform, logging llm_ts", "min_traffic": min_traffic,
        "runs": runs, "experiments": experiments, "arms": arms, "rounds_per_experiment": rounds,
        "resamples": resamples, "nominal": 0.95,
        "coverage": {n: sum(r["covered"][n] for r in results) / runs for n in names},
        "mean_error": {n: float(np.mean([r["estimates"][n]["value"] - r["truth"] for r in results])) for n in names},
        "sd_error": {n: float(np.std([r["estimates"][n]["value"] - r["truth"] for r in results])) for n in names},
        "mean_abs_error": {n: float(np.mean([abs(r["estimates"][n]["value"] - r["truth"]) for r in results]))
                           for n in names},
        "mean_ci_width": {n: float(np.mean([r["estimates"][n]["ci"][1] - r["estimates"][n]["ci"][0]
                                            for r in results])) for n in names},
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
        emit(out, json_out, ", ".join(f"{n} {100 * c:.0f} %" for n, c in out["coverage"].items()) + f" of {runs} runs")


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
