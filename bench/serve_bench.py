"""``lola bench serve``: decision latency at the edge, over HTTP, and through Kafka, in one run.

* **edge in process**: :meth:`lola.client.EdgeAllocator.decide` (the draw, the request id and
  the decision record handed to librdkafka), timed call by call while a publisher thread
  writes policy snapshots to the snapshots topic at ``--snapshot-rate`` records/s and the
  allocator's follower thread ingests them (the production rate stated in the result:
  with the worker's 1 s snapshot interval, ``--experiments`` active experiments publish
  that many snapshots per second);
* **HTTP**: ``lola serve`` in a subprocess (the same allocator behind FastAPI/uvicorn with
  httptools and uvloop), an open-loop load generator (aiohttp, asyncio, this process) sending ``POST /rank`` at each rate of
  ``--http-rates`` for ``--http-seconds``; latency from the *scheduled* send time, so a
  stalled server cannot hide queueing (no coordinated omission);
* **Kafka round trip** (the peer): decision_request -> worker -> decisions topic at
  ``--kafka-rate``, the loop of ``lola bench stream``.

Everything runs on this machine (broker, worker, server, load generator), so the figures
are for a shared machine: the load average is reported with them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Optional

import typer

from lola.bench.stream_bench import _machine, _settings, decision_latency


def _snapshot(exp_id: str, arms: int, version: int, now: float) -> bytes:
    from lola.stream import events as ev

    shares = [0.9] + [0.1 / (arms - 1)] * (arms - 1) if arms > 1 else [1.0]
    arm = {"impressions": 100.0 * version, "clicks": 1.0 * version, "conversions": 0.0, "prior": 0.02,
           "score": 0.03, "active": True}
    snap = {"v": 1, "type": "policy_snapshot", "experiment_id": exp_id, "policy": "llm2ucb",
            "policy_version": version, "n_aux": 5600.0, "ts": now, "partition": 0, "input_offset": version,
            "arms": {f"v{k}": {**arm, "serving_share": shares[k]} for k in range(arms)},
            "ope": {"needs_floor": True, "min_traffic": 0.0, "supported": False},
            "edge": {"method": "hallucinate", "horizon_impressions": 100.0, "valid_until": now + 30.0,
                     "allocation": {f"v{k}": shares[k] for k in range(arms)},
                     "fallback": {f"v{k}": 1.0 / arms for k in range(arms)}}}
    return ev.encode_snapshot(snap)


class SnapshotPublisher:
    """Writes snapshot records round-robin over the experiments at ``rate`` records/s (a thread)."""

    def __init__(self, settings: Any, exp_ids: list[str], arms: int, rate: float) -> None:
        from confluent_kafka import Producer

        from lola.stream import kafka as kf

        self.kf = kf
        self.settings, self.exp_ids, self.arms, self.rate = settings, exp_ids, arms, rate
        self.producer = Producer(kf.producer_config(settings))
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def publish_all(self) -> None:
        for e in self.exp_ids:
            self.kf.produce(self.producer, self.settings.snapshots_topic, _snapshot(e, self.arms, 1, time.time()),
                            key=e.encode())
        self.producer.flush(30)

    def _run(self) -> None:
        t0 = time.perf_counter()
        i = 0
        while not self._stop.is_set():
            due = t0 + i / self.rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(min(delay, 0.01))
                continue
            e = self.exp_ids[i % len(self.exp_ids)]
            self.kf.produce(self.producer, self.settings.snapshots_topic,
                            _snapshot(e, self.arms, 2 + i // len(self.exp_ids), time.time()), key=e.encode())
            self.producer.poll(0)
            i += 1
            self.sent = i

    def __enter__(self) -> "SnapshotPublisher":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)
        self.producer.flush(30)


def _pct_us(ns: list[int]) -> dict[str, float]:
    import numpy as np

    a = np.asarray(ns, dtype=np.float64) / 1e3
    return {"p50_us": round(float(np.percentile(a, 50)), 2), "p99_us": round(float(np.percentile(a, 99)), 2),
            "p999_us": round(float(np.percentile(a, 99.9)), 2), "max_us": round(float(a.max()), 1)}


def edge_latency(settings: Any, exp_ids: list[str], decisions: int, seed: int) -> dict[str, Any]:
    """decide() call by call on the main thread while the follower ingests snapshots."""
    from lola.client.edge import EdgeAllocator

    with EdgeAllocator(settings=settings, seed=seed) as edge:
        deadline = time.monotonic() + 60
        while len(edge.plans) < len(exp_ids) and time.monotonic() < deadline:
            time.sleep(0.05)
        if len(edge.plans) < len(exp_ids):
            raise RuntimeError(f"the edge saw {len(edge.plans)} of {len(exp_ids)} experiments within 60 s")
        n = len(exp_ids)
        for i in range(2000):  # warm-up
            edge.decide(exp_ids[i % n])
        times = []
        clock = time.perf_counter_ns
        t_start = time.perf_counter()
        versions0 = sum(p.policy_version for p in edge.plans.values())
        for i in range(decisions):
            e = exp_ids[(i * 7919) % n]
            t0 = clock()
            edge.decide(e)
            times.append(clock() - t0)
        wall = time.perf_counter() - t_start
        versions1 = sum(p.policy_version for p in edge.plans.values())
        edge.flush(30)
        out = _pct_us(times)
        out.update({"decisions": decisions, "decisions_per_s": round(decisions / wall),
                    "snapshot_versions_applied": int(versions1 - versions0), "logged": edge.logged,
                    "log_failed": edge.log_failed})
        return out


async def _http_run(url: str, key: str, exp_ids: list[str], rate: float, seconds: float) -> dict[str, Any]:
    """Open loop: request ``i`` is due at ``t0 + i / rate``; its latency counts from then."""
    import aiohttp
    import numpy as np

    n = int(rate * seconds)
    lat: list[float] = []
    errors: dict[str, int] = {}
    bodies = [json.dumps({"experiment_id": e}).encode() for e in exp_ids]
    headers = {"X-API-Key": key, "content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        t0 = time.perf_counter()

        async def one(i: int) -> None:
            due = t0 + i / rate
            try:
                async with session.post("/rank", data=bodies[i % len(bodies)], headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors[str(r.status)] = errors.get(str(r.status), 0) + 1
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            lat.append(time.perf_counter() - due)

        tasks = []
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    a = np.asarray(lat) * 1e3 if lat else np.array([np.nan])
    return {"rate_target": rate, "requests": n, "ok": len(lat), "errors": errors, "achieved_per_s": round(n / wall),
            "p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3),
            "max_ms": round(float(np.max(a)), 3)}


def http_latency(settings: Any, exp_ids: list[str], rates: list[float], seconds: float) -> list[dict[str, Any]]:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = uuid.uuid4().hex
    env = {**os.environ, **settings.as_env(), "LOLA_SERVE_API_KEYS": key, "LOLA_SERVE_PORT": str(port),
           "LOLA_SERVE_HOST": "127.0.0.1", "LOLA_SERVE_RATE_PER_S": "1000000", "LOLA_SERVE_RATE_BURST": "100000"}
    server = subprocess.Popen([sys.executable, "-m", "lola.cli", "serve"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("lola serve did not become ready within 90 s")
            time.sleep(0.2)
        asyncio.run(_http_run(url, key, exp_ids, 500.0, 2.0))  # warm-up
        return [asyncio.run(_http_run(url, key, exp_ids, r, seconds)) for r in rates]
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def run_serve_bench(experiments: int, arms: int, snapshot_rate: float, decisions: int, http_rates: list[float],
                    http_seconds: float, kafka_rate: float, kafka_requests: int, seed: int) -> dict[str, Any]:
    from lola.stream import kafka as kf
    from lola.stream.broker import EmbeddedBroker

    machine = _machine()
    exp_ids = [f"edge-{i}" for i in range(experiments)]
    broker = EmbeddedBroker().start()
    try:
        s = _settings(broker.bootstrap, f"sb-{uuid.uuid4().hex[:6]}", partitions=4)
        kf.ensure_topics(s)
        pub = SnapshotPublisher(s, exp_ids, arms, snapshot_rate)
        pub.publish_all()
        with pub:
            t0 = time.perf_counter()
            edge = edge_latency(s, exp_ids, decisions, seed)
            http = http_latency(s, exp_ids, http_rates, http_seconds)
            snapshots_per_s = round(pub.sent / (time.perf_counter() - t0))
        kafka = decision_latency(_settings(broker.bootstrap, f"sb-k-{uuid.uuid4().hex[:6]}", partitions=4),
                                 kafka_requests, kafka_rate, min(experiments, 200), arms)
    finally:
        broker.stop()
    machine["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return {"machine": machine, "broker": "tansu (embedded, memory storage)",
            "snapshot_ingest": {"target_per_s": snapshot_rate, "published_per_s": snapshots_per_s,
                                "experiments": experiments, "arms": arms},
            "edge_in_process": edge, "http": http,
            "kafka_round_trip": {"rate": kafka_rate, "requests": kafka_requests, **kafka},
            "targets": {"edge_p99_us": 50, "http_p99_ms_at_2k": 10}}


def register(app: typer.Typer) -> None:
    """Add ``lola bench serve``."""

    @app.command("serve")
    def serve(
        as_json: bool = typer.Option(False, "--json", help="print only the JSON result"),
        experiments: int = typer.Option(1000, "--experiments", help="experiments with a snapshot"),
        arms: int = typer.Option(3, "--arms"),
        snapshot_rate: float = typer.Option(1000.0, "--snapshot-rate", help="snapshot records per second ingested"),
        decisions: int = typer.Option(200_000, "--decisions", help="edge decisions timed in process"),
        http_rates: str = typer.Option("1000,2000,5000", "--http-rates", help="POST /rank per second, each in turn"),
        http_seconds: float = typer.Option(5.0, "--http-seconds", help="seconds at each HTTP rate"),
        kafka_rate: float = typer.Option(2000.0, "--kafka-rate", help="decision requests per second through Kafka"),
        kafka_requests: int = typer.Option(10_000, "--kafka-requests"),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """Edge decide latency while ingesting snapshots, lola serve over HTTP, and the Kafka round trip."""
        from lola.errors import ConfigError

        try:
            rates = [float(x) for x in http_rates.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--http-rates must be comma-separated numbers, got {http_rates!r}") from None
        if (experiments < 1 or arms < 2 or snapshot_rate <= 0 or decisions < 1000 or not rates or min(rates) <= 0
                or http_seconds <= 0 or kafka_rate <= 0 or kafka_requests < 100):
            raise ConfigError("need --experiments >= 1, --arms >= 2, --decisions >= 1000, --kafka-requests >= 100 "
                              "and positive rates and seconds")
        result = run_serve_bench(experiments, arms, snapshot_rate, decisions, rates, http_seconds, kafka_rate,
                                 kafka_requests, seed)
        typer.echo(json.dumps(result, indent=None if as_json else 2))
