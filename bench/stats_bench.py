"""``lola bench stats``: the cost of snapshot statistics (lola.stream.stats) when every experiment changes.

One shard with ``--experiments`` experiments of ``--arms`` arms (priors set, counts random).
Each round changes every experiment (one impression each, one process() call) and builds
every snapshot, as the worker does each ``snapshot_interval_s``. Timed twice: with the
statistics recomputed for every snapshot (``stats_interval_s = 0``) and with the cache
holding them (the interval not yet passed), so the difference is the statistics' own cost.
The worker pays it for each changed experiment at most once per ``stats_interval_s``:
``cost_share_of_one_core`` = experiments / interval x cost per experiment.
"""

from __future__ import annotations

import time

import numpy as np
import orjson
import typer

from lola.bench.output import JSON_OPTION, emit


def _shard(experiments: int, arms: int, interval: float, seed: int):
    from lola.kernels import BanditState
    from lola.stream.processor import ShardProcessor
    from lola.stream.shard import ProcessorConfig

    proc = ShardProcessor(0, ProcessorConfig(stats_interval_s=interval),
                          state=BanditState(capacity_experiments=experiments, capacity_arms=arms))
    rng = np.random.default_rng(seed)
    recs = []
    for e in range(experiments):
        for k in range(arms):
            recs.append((len(recs), f"e{e}".encode(), orjson.dumps(
                {"type": "variant", "experiment_id": f"e{e}", "variant_id": f"v{k}", "text": f"t{k}"})))
    proc.process(recs, now=1.0)
    for e in range(experiments):
        row = proc.experiments[f"e{e}"].row
        for k in range(arms):
            proc.apply_prior(f"e{e}", f"v{k}", float(rng.uniform(0.01, 0.1)))
        proc.state.impressions[row, :arms] = rng.integers(100, 100_000, arms)
        proc.state.clicks[row, :arms] = proc.state.impressions[row, :arms] * rng.uniform(0.01, 0.1, arms)
    return proc, len(recs)


def _round(proc, offset: int, experiments: int, now: float) -> tuple[float, float]:
    recs = [(offset + e, f"e{e}".encode(), orjson.dumps({"type": "impression", "experiment_id": f"e{e}",
                                                          "variant_id": "v0", "event_id": f"i{offset + e}", "ts": 1.0}))
            for e in range(experiments)]
    t0 = time.perf_counter()
    proc.process(recs, now=now)
    t1 = time.perf_counter()
    for e in range(experiments):
        proc.snapshot(f"e{e}", now)
    return t1 - t0, time.perf_counter() - t1


def run_benchmark(experiments: int, arms: int, rounds: int, interval: float, seed: int) -> dict:
    from lola.stream.processor import warm_up

    warm_up()
    fresh, off = _shard(experiments, arms, 0.0, seed)
    cached, _ = _shard(experiments, arms, 1e9, seed)
    _round(cached, off, experiments, 1.0)  # first computation fills the cache
    t_fresh, t_cached, t_proc = [], [], []
    for r in range(rounds):
        o = off + (r + 1) * experiments
        p, s = _round(fresh, o, experiments, 2.0 + r)
        t_fresh.append(s)
        t_proc.append(p)
        t_cached.append(_round(cached, o, experiments, 2.0 + r)[1])
    per_exp = (float(np.median(t_fresh)) - float(np.median(t_cached))) / experiments
    return {
        "benchmark": "snapshot statistics", "experiments": experiments, "arms": arms, "rounds": rounds,
        "snapshots_with_stats_s": float(np.median(t_fresh)), "snapshots_cached_stats_s": float(np.median(t_cached)),
        "process_one_event_each_s": float(np.median(t_proc)),
        "stats_cost_per_experiment_us": per_exp * 1e6, "stats_interval_s": interval,
        "cost_share_of_one_core": experiments / interval * per_exp,
        "cost_share_of_one_core_without_cap": experiments * per_exp,
    }


def register(app: typer.Typer) -> None:
    """Add ``lola bench stats``."""

    @app.command("stats")
    def stats_cmd(
        json_out: bool = JSON_OPTION,
        experiments: int = typer.Option(2000, min=1, max=1_000_000, help="Experiments, all changing every round."),
        arms: int = typer.Option(4, min=2, max=64, help="Arms per experiment."),
        rounds: int = typer.Option(5, min=1, max=1000, help="Rounds (one per simulated second); medians reported."),
        interval: float = typer.Option(10.0, min=0.001, help="stats_interval_s the cost share is computed for."),
        seed: int = typer.Option(0, help="Workload seed."),
    ) -> None:
        """Cost of the snapshot statistics with every experiment changing every second (JSON)."""
        out = run_benchmark(experiments, arms, rounds, interval, seed)
        emit(out, json_out, f"{out['stats_cost_per_experiment_us']:.1f} us per experiment; at {interval:g} s cadence "
                            f"{100 * out['cost_share_of_one_core']:.2f} % of one core for {experiments} experiments")
