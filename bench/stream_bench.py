"""``lola bench stream``: the worker against a bare confluent-kafka loop, and decision latency.

Throughput: one seeded open-mode stream (impressions and clicks over many experiments)
is written once; then, in the same run and against the same topic and message count,

* the *bare consumer* (the ceiling for this broker and machine) only reads it: a
  confluent-kafka ``consume(batch)`` loop with the worker's fetch settings, no commits;
* the *worker* reads, decodes, validates, de-duplicates, updates the bandit state,
  checkpoints and publishes snapshots.

Both rates are records / seconds between the first and the last batch received.

Latency: a ``lola worker`` subprocess serves decision requests paced at ``--rate``
per second by this process, which reads the decisions topic and records
request -> decision times (same clock). Reported: p50, p99 and the rate reached, split
at the decision's ``ts`` (when the worker started the batch that decided it). The peer
is the *broker hop*: the same paced loop through one topic with no worker in between,
in the same run. A decision takes two hops, so twice the hop is the broker's floor.
Both are repeated at ``--low-rate``.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Optional

import typer


def stop_process(proc: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM (the worker's graceful end), then SIGKILL after ``timeout_s``."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()


def _loadavg_1m() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _machine() -> dict[str, Any]:
    """What the run ran on; the load average is read, at start here and at the end by the caller."""
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_1m_at_start": _loadavg_1m()}


def _settings(bootstrap: str, prefix: str, **kw: Any):
    from lola.stream.settings import StreamSettings

    return StreamSettings(bootstrap_servers=bootstrap, events_topic=f"{prefix}.events",
                          decisions_topic=f"{prefix}.decisions", snapshots_topic=f"{prefix}.snapshots",
                          state_topic=f"{prefix}.state", deadletter_topic=f"{prefix}.deadletter",
                          group_id=f"{prefix}-workers", session_timeout_ms=3000, metrics_port=0, **kw)


def bare_consumer_rate(settings: Any, total: int, batch: int) -> tuple[float, int]:
    """Read ``total`` records with a well-configured confluent-kafka loop; (records/s, read)."""
    from confluent_kafka import Consumer, TopicPartition

    from lola.stream import kafka as kf

    consumer = Consumer(kf.consumer_config(settings, f"bare-{uuid.uuid4().hex[:6]}"))
    md = consumer.list_topics(settings.events_topic, timeout=10).topics[settings.events_topic]
    consumer.assign([TopicPartition(settings.events_topic, p, 0) for p in md.partitions])
    n = 0
    t_last = None
    # Timed from the first fetch, not from the first batch returned: librdkafka prefetches
    # while the first consume() waits, so "first batch to last" flatters whoever waited.
    t_start = time.perf_counter()
    deadline = time.monotonic() + 120
    while n < total and time.monotonic() < deadline:
        msgs = consumer.consume(batch, 0.05)
        if msgs:
            for m in msgs:
                if m.error() is None:
                    n += 1
            t_last = time.perf_counter()
    consumer.close()
    return (n / (t_last - t_start) if t_last and t_last > t_start else 0.0), n


def worker_rate(settings: Any, total: int) -> tuple[float, dict]:
    from lola.stream.worker import Worker

    w = Worker(settings, serve_http=False)  # compiles/loads the kernels before timing
    result = w.run(max_records=total, idle_exit_s=60)
    # From the assignment (like the bare loop's first fetch; the restore is included) to the last record.
    seconds = result["seconds_since_assignment"]
    return (result["records"] / seconds if seconds > 0 else 0.0), result


def _percentiles(values: list[float]) -> dict[str, float]:
    import numpy as np

    a = np.asarray(values) if values else np.array([np.nan])
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "max_ms": float(np.max(a))}


def _paced_round_trip(producer: Any, send_topic: str, consumer: Any, requests: int, rate: float,
                      keys: list[bytes], body: dict[str, Any]) -> dict[str, Any]:
    """Send ``requests`` records at ``rate``/s, read answers by ``request_id``; latency stats.

    The one measuring loop for the bare broker hop and for the worker, so the two are
    comparable: a sender paced on ``perf_counter`` in this thread, a reader thread that
    timestamps each answer as it is decoded. When an answer carries the worker's
    decision ``ts`` the latency is also split at that point (same machine, same clock).
    """
    import orjson

    from lola.stream import kafka as kf

    sent_at: dict[str, float] = {}
    sent_wall: dict[str, float] = {}
    latencies: list[float] = []
    to_decided: list[float] = []
    from_decided: list[float] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set() or len(latencies) < requests:
            # consume(n, t) waits until n messages or t: keep t short or it adds latency.
            for m in consumer.consume(10_000, 0.002):
                if m.error() is not None:
                    continue
                now, wall = time.perf_counter(), time.time()
                answer = orjson.loads(m.value())
                rid = answer.get("request_id")
                t_sent = sent_at.get(rid)
                if t_sent is None:
                    continue
                latencies.append((now - t_sent) * 1000.0)
                decided = answer.get("ts") if answer.get("type", "decision") == "decision" else None
                if isinstance(decided, float):
                    to_decided.append((decided - sent_wall[rid]) * 1000.0)
                    from_decided.append((wall - decided) * 1000.0)
            if done.is_set() and time.monotonic() > deadline:
                return

    deadline = time.monotonic() + requests / rate + 30
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    start = time.perf_counter()
    for i in range(requests):
        target = start + i / rate
        while True:
            now = time.perf_counter()
            if now >= target:
                break
            if target - now > 0.002:
                time.sleep(target - now - 0.001)
        rid = f"q{i}"
        key = keys[i % len(keys)]
        value = orjson.dumps({**body, "experiment_id": key.decode(), "request_id": rid})
        sent_wall[rid] = time.time()
        sent_at[rid] = time.perf_counter()
        kf.produce(producer, send_topic, value, key=key)
        if i % 500 == 0:
            producer.poll(0)
    send_seconds = time.perf_counter() - start
    producer.flush(30)
    done.set()
    reader.join(requests / rate + 40)
    out = {"requests": requests, "answered": len(latencies), "target_rate": rate,
           "achieved_send_rate": requests / send_seconds if send_seconds > 0 else 0.0, **_percentiles(latencies)}
    if to_decided:
        out["request_to_decision_ts"] = _percentiles(to_decided)
        out["decision_ts_to_read"] = _percentiles(from_decided)
    return out


def broker_hop_latency(settings: Any, requests: int, rate: float, keys: int) -> dict[str, Any]:
    """The floor: the same paced loop through ONE topic with no worker (produce -> fetch).

    A decision needs two such hops (request in, decision out), so twice this is what
    the broker alone costs at this rate on this machine.
    """
    from confluent_kafka import Consumer, Producer, TopicPartition

    from lola.stream import kafka as kf

    kf.ensure_topics(settings)
    topic = settings.decisions_topic  # an empty topic with the events topic's partitions
    producer = Producer(kf.producer_config(settings, **{"linger.ms": 1}))
    consumer = Consumer(kf.consumer_config(settings, f"hop-{uuid.uuid4().hex[:6]}", **{"fetch.wait.max.ms": 1}))
    md = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    try:
        return _paced_round_trip(producer, topic, consumer, requests, rate,
                                 [f"hop-{i}".encode() for i in range(keys)], {"type": "echo"})
    finally:
        consumer.close()


def decision_latency(settings: Any, requests: int, rate: float, experiments: int, arms: int) -> dict[str, Any]:
    """Pace decision requests at ``rate``/s to a worker subprocess; latency percentiles."""
    import orjson
    from confluent_kafka import Consumer, Producer, TopicPartition

    from lola.stream import kafka as kf

    kf.ensure_topics(settings)
    producer = Producer(kf.producer_config(settings, **{"linger.ms": 1}))
    exp_ids = [f"lat-{i}" for i in range(experiments)]
    for e in exp_ids:
        for k in range(arms):
            kf.produce(producer, settings.events_topic, orjson.dumps(
                {"type": "variant", "experiment_id": e, "variant_id": f"v{k}", "text": f"h{k}"}), key=e.encode())
    producer.flush(30)
    env = {**os.environ, **settings.as_env()}
    env.update({"LOLA_BATCH_SIZE": "2000", "LOLA_POLL_TIMEOUT_S": "0.001", "LOLA_LOG_LEVEL": "WARNING",
                "LOLA_FETCH_WAIT_MAX_MS": "1"})
    worker = subprocess.Popen([sys.executable, "-m", "lola.cli", "worker"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    consumer = Consumer(kf.consumer_config(settings, f"lat-{uuid.uuid4().hex[:6]}", **{"fetch.wait.max.ms": 1}))
    md = consumer.list_topics(settings.decisions_topic, timeout=10).topics[settings.decisions_topic]
    consumer.assign([TopicPartition(settings.decisions_topic, p, 0) for p in md.partitions])
    try:
        # Warm-up: wait until the worker answers (group join, restore, JIT cache load).
        t0 = time.monotonic()
        warm = "warm-0"
        kf.produce(producer, settings.events_topic, orjson.dumps(
            {"type": "decision_request", "experiment_id": exp_ids[0], "request_id": warm}), key=exp_ids[0].encode())
        producer.flush(10)
        answered = False
        while not answered and time.monotonic() - t0 < 60:
            for m in consumer.consume(100, 0.1):
                if m.error() is None and orjson.loads(m.value())["request_id"] == warm:
                    answered = True
        if not answered:
            raise RuntimeError("worker did not answer a decision request within 60 s")
        return _paced_round_trip(producer, settings.events_topic, consumer, requests, rate,
                                 [e.encode() for e in exp_ids], {"type": "decision_request"})
    finally:
        stop_process(worker, 30)
        consumer.close()


def run_stream_bench(bootstrap: Optional[str], events: int, experiments: int, arms: int, requests: int,
                     rate: float, seed: int, low_rate: float = 2000.0) -> dict[str, Any]:
    from confluent_kafka import Producer

    from lola.stream import kafka as kf
    from lola.stream.broker import EmbeddedBroker
    from lola.stream.loadgen import open_stream, send

    machine = _machine()

    class _Broker:
        """A fresh embedded Tansu per phase (memory storage slows as its log grows), or the given one."""

        def __enter__(self) -> str:
            self.broker = None if bootstrap else EmbeddedBroker().start()
            return bootstrap or self.broker.bootstrap

        def __exit__(self, *exc: Any) -> None:
            if self.broker is not None:
                self.broker.stop()

    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    with _Broker() as boot:
        s = _settings(boot, prefix, partitions=4, checkpoint_interval_s=1.0)
        kf.ensure_topics(s)
        stream = open_stream(events, experiments, arms, seed, duplicate_rate=0.01, malformed_rate=0.001)
        total = send(Producer(kf.producer_config(s)), s.events_topic, stream.records)
        bare, bare_read = bare_consumer_rate(s, total, s.batch_size)
        worker, result = worker_rate(s, total)
        bare2, _ = bare_consumer_rate(s, total, s.batch_size)  # again, to bracket machine noise
    low_rate = min(rate, low_rate)
    low_n = min(requests, int(low_rate * 5))
    latency: dict[str, Any] = {}
    # Low rate first; each path on its own fresh broker, the hop (no worker) beside the worker.
    for name, n, r in (("low_rate", low_n, low_rate), ("target_rate", requests, rate)):
        with _Broker() as boot:
            latency[f"broker_hop_{name}"] = broker_hop_latency(_settings(boot, f"{prefix}-hop-{name}", partitions=4),
                                                               n, r, 64)
        with _Broker() as boot:
            latency[f"decision_{name}"] = decision_latency(_settings(boot, f"{prefix}-lat-{name}", partitions=4),
                                                           n, r, 64, arms)
    machine["loadavg_1m_at_end"] = _loadavg_1m()
    bare_best = max(bare, bare2)
    return {
        "worker_events_per_s": round(worker, 1),
        "bare_consumer_events_per_s": round(bare_best, 1),
        "bare_consumer_runs_events_per_s": [round(bare, 1), round(bare2, 1)],
        "ratio": round(worker / bare_best, 4) if bare_best else None,
        "decision_latency_p50_ms": round(latency["decision_target_rate"]["p50_ms"], 3),
        "decision_latency_p99_ms": round(latency["decision_target_rate"]["p99_ms"], 3),
        "decision_latency": latency["decision_target_rate"],
        "broker_hop_latency": latency["broker_hop_target_rate"],
        "decision_latency_low_rate": latency["decision_low_rate"],
        "broker_hop_latency_low_rate": latency["broker_hop_low_rate"],
        "p99_vs_two_broker_hops": {k: round(latency[f"decision_{k}"]["p99_ms"] /
                                            (2 * latency[f"broker_hop_{k}"]["p99_ms"]), 3)
                                   for k in ("target_rate", "low_rate")},
        "records": total, "worker_records": result["records"], "bare_records": bare_read,
        "targets": {"ratio": ">= 0.8", "decision_latency_p99_ms": "< 20 at 50k requests/s"},
        "broker": bootstrap or "tansu (embedded, memory storage; a fresh one per phase)",
        "machine": machine,
    }


def register(app: typer.Typer) -> None:
    """Add ``lola bench stream``."""

    @app.command("stream")
    def stream(
        as_json: bool = typer.Option(False, "--json", help="print only the JSON result"),
        bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help="external broker (default: embedded Tansu)"),
        events: int = typer.Option(200_000, "--events", help="valid events in the throughput stream"),
        experiments: int = typer.Option(200, "--experiments"),
        arms: int = typer.Option(3, "--arms"),
        requests: int = typer.Option(100_000, "--requests", help="decision requests in the latency run"),
        rate: float = typer.Option(50_000.0, "--rate", help="decision requests per second"),
        low_rate: float = typer.Option(2_000.0, "--low-rate", help="the second, lower rate of the latency runs"),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """Worker vs bare confluent-kafka consumer throughput, and decision latency."""
        from lola.errors import ConfigError

        if events < 1000 or requests < 100 or rate <= 0 or low_rate <= 0 or experiments < 1 or arms < 1:
            raise ConfigError("need --events >= 1000, --requests >= 100, --rate/--low-rate > 0, "
                              "--experiments/--arms >= 1")
        result = run_stream_bench(bootstrap, events, experiments, arms, requests, rate, seed, low_rate)
        text = json.dumps(result, indent=None if as_json else 2)
        typer.echo(text)
