"""``lola bench checkpoints``: bytes written to the state topic, incremental vs full checkpoints.

The method of the table in docs/operations/checkpoints.md: ``--partitions`` shards share
``--experiments`` experiments of ``--arms`` arms (~75-character texts, a prior on every
arm); one shard is built (the others are alike) and its de-duplication window filled to
the budget (``LOLA_DEDUP_BUDGET_BYTES``'s default) by impressions at ``--rate`` events/s
of event time. Then ``--seconds`` rounds of one interval each: ``--rate`` events (random
experiments and arms, impressions with a click on one in ten, a request id each), then
the record the worker would write (the checkpointer's own chain policy:
``ShardChain.next_record`` with the default chain cap). Peer: the full record
(``ShardProcessor.to_checkpoint``), measured at the start and the end of the rounds.

bytes/s to the state topic = partitions x (bytes of the round's records) / interval,
averaged over the rounds (so the bases of the chain are included). Restore: the last
chain of the run (its base and deltas; it must equal the live state) and the longest
chain of the run, vs the full record of the final state.
"""

from __future__ import annotations

import random
import time

import numpy as np
import orjson
import typer

from lola.bench.output import JSON_OPTION, emit


def _shard(experiments: int, arms: int, seed: int, dedup_budget_bytes: int | None):
    from lola.kernels import BanditState
    from lola.stream.processor import ShardProcessor
    from lola.stream.shard import ProcessorConfig

    cfg = ProcessorConfig() if dedup_budget_bytes is None else ProcessorConfig(dedup_budget_bytes=dedup_budget_bytes)
    proc = ShardProcessor(0, cfg, state=BanditState(capacity_experiments=max(experiments, 64), capacity_arms=arms))
    rng = np.random.default_rng(seed)
    recs = []
    for e in range(experiments):
        for k in range(arms):
            text = f"Headline {k} of experiment {e}: " + "lorem ipsum dolor sit amet consectetur "[:40]
            recs.append((len(recs), f"e{e}".encode(), orjson.dumps(
                {"type": "variant", "experiment_id": f"e{e}", "variant_id": f"v{k}", "text": text[:75]})))
    proc.process(recs, now=1.0, timestamps=[1.0] * len(recs))
    for e in range(experiments):
        for k in range(arms):
            proc.apply_prior(f"e{e}", f"v{k}", float(rng.uniform(0.01, 0.1)))
    return proc, cfg


class _Events:
    def __init__(self, experiments: int, arms: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.experiments, self.arms = experiments, arms
        self.ts = 1_000.0
        self.n = 0

    def second(self, proc, rate: int) -> None:
        rng, recs, stamps = self.rng, [], []
        for i in range(rate):
            e, k = f"e{rng.randrange(self.experiments)}", f"v{rng.randrange(self.arms)}"
            ts = self.ts + i / rate
            self.n += 1
            recs.append((proc.next_offset + len(recs), e.encode(), orjson.dumps(
                {"type": "impression", "experiment_id": e, "variant_id": k, "event_id": f"i{self.n}", "ts": ts,
                 "request_id": f"r{self.n}"})))
            stamps.append(ts)
            if self.n % 10 == 0:
                recs.append((proc.next_offset + len(recs), e.encode(), orjson.dumps(
                    {"type": "click", "experiment_id": e, "variant_id": k, "event_id": f"c{self.n}",
                     "impression_id": f"i{self.n}", "ts": ts})))
                stamps.append(ts)
        self.ts += 1.0
        proc.process(recs, now=self.ts, timestamps=stamps)


def run(experiments: int, partitions: int, arms: int, rate: int, seconds: int, interval: float, seed: int,
        dedup_budget_bytes: int | None = None) -> dict:
    from lola.stream.chain import Chain, restore
    from lola.stream.checkpoints import ShardChain
    from lola.stream.processor import ShardProcessor
    from lola.stream.settings import StreamSettings

    per = max(1, experiments // partitions)
    proc, cfg = _shard(per, arms, seed, dedup_budget_bytes)
    events = _Events(per, arms, seed)
    while proc.seen.budget_evictions == 0:  # the window as the budget holds it
        events.second(proc, rate)
    full_sizes = [len(proc.to_checkpoint("events"))]
    cap = StreamSettings.model_fields["checkpoint_delta_max_chain"].default
    chain = ShardChain(0)
    sizes, kinds, times = [], [], []
    base: bytes | None = None
    deltas: list[bytes] = []
    longest: tuple[bytes | None, list[bytes]] = (None, [])  # the longest chain written (restored below)
    for _ in range(seconds):
        events.second(proc, rate)
        t0 = time.perf_counter()
        key, blob = chain.next_record(proc, b"g:events:0", "events", "bench", True, cap)
        times.append(time.perf_counter() - t0)
        is_delta = b":delta:" in key
        sizes.append(len(blob))
        kinds.append("delta" if is_delta else "base")
        if is_delta:
            deltas.append(blob)
            if len(deltas) >= len(longest[1]):
                longest = (base, list(deltas))
        else:
            base, deltas = blob, []
    t0 = time.perf_counter()
    full = proc.to_checkpoint("events")
    full_serialise_s = time.perf_counter() - t0
    full_sizes.append(len(full))
    t0 = time.perf_counter()
    ShardProcessor.from_checkpoint(full, cfg)
    full_restore_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    restored = restore(Chain(base, deltas), cfg)  # the last chain: it ends at the live state
    chain_restore_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    restore(Chain(*longest), cfg) if longest[0] is not None else None
    longest_restore_s = time.perf_counter() - t0
    n = proc.state.n_experiments
    exact = bool(restored.next_offset == proc.next_offset and restored.seen.to_json() == proc.seen.to_json()
                 and all(np.array_equal(getattr(restored.state, a)[:n], getattr(proc.state, a)[:n])
                         for a in ("impressions", "clicks", "conversions", "mu_aux")))
    delta_sizes = [s for s, k in zip(sizes, kinds) if k == "delta"]
    delta_times = [t for t, k in zip(times, kinds) if k == "delta"]
    full_mean = sum(full_sizes) / len(full_sizes)
    return {
        "experiments": experiments, "partitions": partitions, "experiments_per_partition": per, "arms": arms,
        "events_per_s_per_partition": rate, "interval_s": interval, "rounds": seconds,
        "dedup_entries": len(proc.seen),
        "full_record_bytes": int(full_mean),
        "full_bytes_per_s": round(partitions * full_mean / interval),
        "delta_bytes_per_s": round(partitions * sum(sizes) / len(sizes) / interval),
        "ratio_full_over_delta": round(full_mean * len(sizes) / sum(sizes), 2),
        "bases": kinds.count("base"), "deltas": kinds.count("delta"),
        "delta_record_bytes_mean": round(sum(delta_sizes) / len(delta_sizes)) if delta_sizes else None,
        "serialise_delta_s_mean": round(sum(delta_times) / len(delta_times), 4) if delta_times else None,
        "serialise_full_s": round(full_serialise_s, 3),
        "restore_full_s": round(full_restore_s, 3),
        "restore_chain_s": round(chain_restore_s, 3), "restore_chain_deltas": len(deltas),
        "restore_longest_chain_s": round(longest_restore_s, 3), "longest_chain_deltas": len(longest[1]),
        "restore_chain_equals_live_counts_and_window": exact,
    }


def register(app: typer.Typer) -> None:
    @app.command("checkpoints")
    def checkpoints_cmd(
        experiments: str = typer.Option("1000,10000,100000", help="total experiments, comma-separated runs"),
        partitions: int = typer.Option(4, min=1, help="partitions sharing them (one shard is simulated)"),
        arms: int = typer.Option(4, min=1, max=64),
        rate: int = typer.Option(2000, min=1, help="events/s per partition (event time)"),
        seconds: int = typer.Option(40, min=2, help="rounds of one checkpoint interval"),
        interval: float = typer.Option(1.0, min=0.01, help="checkpoint interval (s)"),
        seed: int = typer.Option(0),
        dedup_budget_bytes: int = typer.Option(None, min=10_000, help="de-duplication budget (default: the setting's)"),
        json_out: bool = JSON_OPTION,
    ) -> None:
        """Bytes/s to the state topic with incremental checkpoints vs full ones, and restore times."""
        from lola.stream.processor import warm_up

        warm_up()
        runs = [run(int(e), partitions, arms, rate, seconds, interval, seed, dedup_budget_bytes)
                for e in experiments.split(",")]
        emit({"runs": runs}, json_out, "; ".join(
            f"{r['experiments']} experiments: full {r['full_bytes_per_s'] / 1e6:.1f} MB/s, "
            f"deltas {r['delta_bytes_per_s'] / 1e6:.1f} MB/s" for r in runs))
