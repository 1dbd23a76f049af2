"""``lola bench lifecycle``: create and archive N experiments through a worker; memory before and after.

Issue 19's "100k experiments created and archived leave worker memory and checkpoint size within
10 % of the baseline", measured on a real worker subprocess and the embedded broker (or
``--bootstrap``):

1. one baseline experiment (two variants) on each partition; the worker owns every partition;
   its RSS once the lag is 0 and its first checkpoints are written is the **baseline**;
2. N experiments, each two variants (``attribution_window_s`` 1) and an ``archive``: RSS
   with all of them held is the **peak**;
3. after the attribution window, one record on each partition moves its clock (an
   impression of an unknown experiment: a dead letter), the worker evicts the archived experiments (``lola_experiments`` back
   to the baseline count), trims its heap (stream/memory.py) and checkpoints: RSS is the
   **end**;
4. with ``--waves 2`` or more, steps 2-3 again with new ids: an end that stays where the
   first wave's was means the excess over the baseline is paid once (compiled paths, caches
   filled once), not per experiment ever created.

The worker's RSS is read from ``/proc`` (median of three samples, 2 s apart) and the broker's
is reported apart. ``state_bytes`` is the sum over partitions of ``lola_state_bytes``, the
size of each partition's last full checkpoint (the base its deltas build on). Nothing is
judged here; the issue's targets are printed beside.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Optional

import typer

from lola.bench.soak import _metrics, _rss_mb
from lola.stream.memory import TRIM_MIN_INTERVAL_S

SETTLE_S = 2 * TRIM_MIN_INTERVAL_S + 5.0  # checkpoints, and a wave's heap trim and its follow-up
PHASE_LIMIT_S = 600.0  # a phase that does not finish in this long fails the run


def _wait(port: int, done, what: str, worker: subprocess.Popen) -> float:
    t0 = time.monotonic()
    while not done(_metrics(port)):
        if worker.poll() is not None or time.monotonic() - t0 > PHASE_LIMIT_S:
            raise RuntimeError(f"the worker did not {what} within {PHASE_LIMIT_S:.0f} s")
        time.sleep(0.5)
    return round(time.monotonic() - t0, 1)


def _rss(pid: int) -> float:
    values = []
    for _ in range(3):
        values.append(_rss_mb(pid) or 0.0)
        time.sleep(2.0)
    return statistics.median(values)


def run(bootstrap: Optional[str], experiments: int, partitions: int, allocator: str = "malloc",
        waves: int = 1) -> dict[str, Any]:
    import orjson
    from confluent_kafka import Producer

    from lola.bench.stream_bench import _machine, _settings, stop_process
    from lola.stream import kafka as kf
    from lola.stream.broker import EmbeddedBroker, free_port
    from lola.stream.broker import broker_config as named_config

    machine = _machine()
    config = named_config("memory-batched")
    broker = None if bootstrap else EmbeddedBroker(config=config.name).start()
    s = _settings(bootstrap or broker.bootstrap, f"life-{uuid.uuid4().hex[:6]}", partitions=partitions,
                  **({} if bootstrap else config.client_settings)).model_copy(update={"metrics_port": free_port()})
    port = s.metrics_port
    kf.ensure_topics(s)
    producer = Producer(kf.producer_config(s))

    def send(events: list[dict]) -> None:
        for e in events:
            kf.produce(producer, s.events_topic, orjson.dumps(e), key=e["experiment_id"].encode())
            producer.poll(0)
        producer.flush(120)

    base_ids = [f"base-{i}" for i in range(partitions)]
    for part, e in enumerate(base_ids):  # one on every partition (keys need not hash evenly), so
        for v in ("a", "b"):  # every partition has written a base when the baseline is read
            kf.produce(producer, s.events_topic, orjson.dumps({"type": "variant", "experiment_id": e, "variant_id": v,
                       "text": f"headline {v} of {e}"}), key=e.encode(), partition=part)
    producer.flush(120)
    env = {**os.environ, **s.as_env(), "LOLA_LOG_LEVEL": "WARNING", "LOLA_PRIOR_PROVIDER": "constant",
           "LOLA_CONSTANT_PRIOR": "0.05", "PYTHONMALLOC": allocator, "LOLA_MAX_EXPERIMENTS_PER_PARTITION": str(max(20_000, 2 * experiments // partitions))}
    log = tempfile.NamedTemporaryFile("w+", prefix="lola-lifecycle-worker-", suffix=".log", delete=False)
    worker = subprocess.Popen([sys.executable, "-m", "lola.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
    out: dict[str, Any] = {}
    try:
        _wait(port, lambda m: m.get("lola_assigned_partitions", 0) >= partitions
              and m.get("lola_experiments", 0) >= len(base_ids) and m.get("lola_consumer_lag", 1) == 0,
              "own every partition and read the baseline experiments", worker)
        time.sleep(SETTLE_S)
        baseline = _rss(worker.pid)
        state_baseline = int(_metrics(port).get("lola_state_bytes", 0))

        def wave(k: int) -> dict[str, Any]:
            """Create and archive ``experiments`` experiments, then evict them: RSS at the peak and after."""
            evicted_before = int(_metrics(port).get("lola_experiments_evicted_total", 0))
            t0 = time.monotonic()
            send([ev for i in range(experiments) for ev in (
                {"type": "variant", "experiment_id": f"w{k}x{i}", "variant_id": "a", "text": f"headline a of x{i}",
                 "settings": {"attribution_window_s": 1}},
                {"type": "variant", "experiment_id": f"w{k}x{i}", "variant_id": "b", "text": f"headline b of x{i}"},
                {"type": "experiment", "experiment_id": f"w{k}x{i}", "action": "archive"})])
            # held or already evicted: on a slow run the records' clock passes the first archives'
            # attribution windows while the last ones are still being created
            _wait(port, lambda m: m.get("lola_consumer_lag", 1) == 0 and m.get("lola_experiments", 0)
                  + m.get("lola_experiments_evicted_total", 0) - evicted_before >= len(base_ids) + experiments,
                  "create every experiment", worker)
            created_s = round(time.monotonic() - t0, 1)
            peak = _rss(worker.pid)
            at_peak = _metrics(port)
            held_at_peak = int(at_peak.get("lola_experiments", 0))
            time.sleep(2.0)  # past the attribution window, in the records' Kafka timestamps
            for part in range(partitions):  # a record on every partition moves its clock (an unknown
                tick = {"type": "impression", "experiment_id": "tick", "variant_id": "a",  # experiment: dead letter)
                        "event_id": f"tick-{k}-{part}", "ts": time.time()}
                kf.produce(producer, s.events_topic, orjson.dumps(tick), key=b"tick", partition=part)
            producer.flush(60)
            evicted_s = _wait(port, lambda m: m.get("lola_experiments", 0) <= len(base_ids)
                              and m.get("lola_experiments_evicted_total", 0) - evicted_before >= experiments,
                              "evict them", worker)
            time.sleep(SETTLE_S)
            return {"peak_mb": peak, "end_mb": _rss(worker.pid), "experiments_held_at_peak": held_at_peak,
                    "state_bytes_at_peak": int(at_peak.get("lola_state_bytes", 0)),
                    "state_bytes_end": int(_metrics(port).get("lola_state_bytes", 0)),
                    "create_and_archive_s": created_s, "evict_s": evicted_s}

        runs = [wave(k) for k in range(waves)]
        end = runs[0]["end_mb"]
        m = _metrics(port)
        out = {"benchmark": "lifecycle", "experiments": experiments, "partitions": partitions, "allocator": allocator,
               "worker_rss_mb": {"baseline": baseline, "peak": runs[0]["peak_mb"], "end": end,
                                 "end_over_baseline": round(end / baseline, 3)},
               "state_bytes": {"baseline": state_baseline, "peak": runs[0]["state_bytes_at_peak"],
                               "end": runs[0]["state_bytes_end"],
                               "end_over_baseline": round(runs[0]["state_bytes_end"] / max(state_baseline, 1), 3)},
               "waves": runs, "last_end_over_first_end": round(runs[-1]["end_mb"] / end, 3),
               "broker_rss_mb": _rss_mb(broker.process.pid) if broker is not None else None,
               "evicted": int(m.get("lola_experiments_evicted_total", 0)),
               "experiments_held_at_end": int(m.get("lola_experiments", 0)),
               "target": {"worker_rss_mb.end_over_baseline": "<= 1.10", "state_bytes.end_over_baseline": "<= 1.10"},
               "worker_log": log.name, "machine": machine}
    finally:
        stop_process(worker, 60)
        if broker is not None:
            broker.stop()
    return out


def register(app: typer.Typer) -> None:
    """Add ``lola bench lifecycle``."""

    @app.command("lifecycle")
    def lifecycle(
        experiments: int = typer.Option(100_000, "--experiments", help="experiments created and archived"),
        partitions: int = typer.Option(8, "--partitions", help="partitions of the events topic (the worker owns all)"),
        as_json: bool = typer.Option(False, "--json", help="print only the JSON result"),
        bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help="external broker (default: embedded Tansu)"),
        waves: int = typer.Option(1, "--waves", help="create-archive-evict rounds (a second shows whether the "
                                  "first's excess over the baseline is kept once or grows per round)"),
        allocator: str = typer.Option("malloc", "--allocator", help="the worker's PYTHONMALLOC: malloc (what "
                                      "lola worker and the images use, docs/operations/limits.md) or pymalloc "
                                      "(CPython's default)"),
    ) -> None:
        """Create and archive N experiments through a worker: its RSS at baseline, peak and after eviction."""
        from lola.errors import ConfigError

        if not 1 <= experiments <= 1_000_000 or not 1 <= partitions <= 256:
            raise ConfigError("need 1 <= --experiments <= 1,000,000 and 1 <= --partitions <= 256")
        if not 1 <= waves <= 10:
            raise ConfigError(f"--waves must be in [1, 10], got {waves}")
        if allocator not in ("malloc", "pymalloc"):
            raise ConfigError(f"--allocator must be malloc or pymalloc, got {allocator!r}")
        typer.echo(json.dumps(run(bootstrap, experiments, partitions, allocator, waves), indent=None if as_json else 2))
