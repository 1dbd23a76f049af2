"""``lola bench soak``: a fixed absolute event rate for N minutes against a worker subprocess.

The load (default: 8,000 events/s over 2,000 experiments x 4 arms) is impressions with
clicks, a share of exact re-sends (duplicates) and malformed messages, produced by this
process on a schedule fixed in absolute time (``rate x elapsed`` events by each moment; a
producer that falls behind catches up and the shortfall is reported). Every 10 s the run
records the worker's and the broker's resident memory separately (``/proc/PID/status``),
the consumer lag and the checkpoint bytes written (both from the worker's ``/metrics``).
After the load it measures how long the lag takes to drain to 0.

The embedded broker runs in a named configuration (``--broker-config``, default
``memory-batched``: :data:`lola.stream.broker.BROKER_CONFIGS`), whose client settings the load
producer and the worker both use; the JSON's ``broker`` names it, with the Tansu version.

Reported: the samples, the worker's RSS growth from the first minute to the end, worker and
broker RSS summaries kept apart, the broker's CPU seconds, the drain
time, the rate sent, the machine and its load average. Nothing is judged here; the issue's
targets (RSS growth < 5 % after the first minute, drain within 60 s) are printed beside.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import deque
from typing import Any, Optional

import typer

SAMPLE_S = 10.0
DRAIN_LIMIT_S = 120.0
READY_LIMIT_S = 300.0  # worker start (imports, JIT, group join) on a busy machine


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (``/proc/PID/stat`` utime + stime)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def _metrics(port: int) -> dict[str, float]:
    """Sums of the worker's Prometheus samples by metric name (labels summed)."""
    out: dict[str, float] = {}
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


class Load:
    """Produces the soak's events at a fixed absolute rate on a thread."""

    def __init__(self, settings: Any, rate: float, experiments: int, arms: int, seconds: float, seed: int,
                 duplicate_rate: float = 0.02, malformed_rate: float = 0.005) -> None:
        import numpy as np

        self.settings, self.rate, self.seconds = settings, rate, seconds
        self.exp_ids = [f"soak-{i}" for i in range(experiments)]
        self.arms = arms
        self.rng = np.random.default_rng(seed)
        self.ctr = self.rng.uniform(0.02, 0.2, size=(experiments, arms))
        self.duplicate_rate, self.malformed_rate = duplicate_rate, malformed_rate
        self.sent = self.duplicates = self.malformed = 0
        self.recent: deque = deque(maxlen=20_000)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def variants(self) -> list[tuple[bytes, bytes]]:
        import orjson

        return [(e.encode(), orjson.dumps({"type": "variant", "experiment_id": e, "variant_id": f"v{k}",
                                            "text": f"headline {k} of {e}"}))
                for e in self.exp_ids for k in range(self.arms)]

    def _events(self, n: int, step0: int) -> list[tuple[bytes, bytes]]:
        import orjson

        rng = self.rng
        u = rng.random(n)
        exps = rng.integers(0, len(self.exp_ids), n)
        arms = rng.integers(0, self.arms, n)
        clicks = rng.random(n)
        now = time.time()
        out = []
        for j in range(n):
            if u[j] < self.duplicate_rate and self.recent:
                out.append(self.recent[int(u[j] * 1e9) % len(self.recent)]); self.duplicates += 1
                continue
            if u[j] < self.duplicate_rate + self.malformed_rate:
                out.append((self.exp_ids[exps[j]].encode(), b'{"type":"impression","experiment_id":')); self.malformed += 1
                continue
            e, k, step = self.exp_ids[exps[j]], int(arms[j]), step0 + j
            rec = (e.encode(), orjson.dumps({"type": "impression", "event_id": f"i{step}", "experiment_id": e,
                                              "variant_id": f"v{k}", "ts": now}))
            out.append(rec); self.recent.append(rec)
            if clicks[j] < self.ctr[exps[j], k]:
                out.append((e.encode(), orjson.dumps({"type": "click", "event_id": f"c{step}", "experiment_id": e,
                                                       "variant_id": f"v{k}", "ts": now, "impression_id": f"i{step}"})))
        return out

    def _run(self) -> None:
        from confluent_kafka import Producer

        from lola.stream import kafka as kf

        try:
            producer = Producer(kf.producer_config(self.settings))  # linger.ms: the broker configuration's
            topic = self.settings.events_topic
            t0 = time.monotonic()
            step = 0
            while (elapsed := time.monotonic() - t0) < self.seconds:
                due = int(self.rate * elapsed) - self.sent
                if due <= 0:
                    time.sleep(0.005)
                    continue
                for key, value in self._events(min(due, 20_000), step):
                    kf.produce(producer, topic, value, key=key)
                    self.sent += 1
                step += min(due, 20_000)
                producer.poll(0)
            producer.flush(60)
        except BaseException as exc:  # reported by the caller
            self.error = exc


def run_soak(bootstrap: Optional[str], minutes: float, rate: float, experiments: int, arms: int,
             seed: int, broker_config: str = "memory-batched") -> dict[str, Any]:
    from confluent_kafka import Producer

    from lola.bench.stream_bench import _loadavg_1m, _machine, _settings, stop_process
    from lola.stream import kafka as kf
    from lola.stream.broker import EmbeddedBroker, free_port
    from lola.stream.broker import broker_config as named_config

    machine = _machine()
    config = named_config(broker_config)
    broker = None if bootstrap else EmbeddedBroker(config=config.name).start()
    boot = bootstrap or broker.bootstrap
    port = free_port()
    # The load producer and the worker (through its environment) both use the configuration's
    # client settings; with --bootstrap (an external broker) the project's defaults apply.
    client = {} if bootstrap else config.client_settings
    s = _settings(boot, f"soak-{uuid.uuid4().hex[:6]}", partitions=4, **client).model_copy(update={"metrics_port": port})
    kf.ensure_topics(s)
    load = Load(s, rate, experiments, arms, minutes * 60.0, seed)
    producer = Producer(kf.producer_config(s))
    for key, value in load.variants():
        kf.produce(producer, s.events_topic, value, key=key)
    producer.flush(60)
    env = {**os.environ, **s.as_env(), "LOLA_LOG_LEVEL": "WARNING", "LOLA_PRIOR_PROVIDER": "constant", "LOLA_CONSTANT_PRIOR": "0.05"}
    log = tempfile.NamedTemporaryFile("w+", prefix="lola-soak-worker-", suffix=".log", delete=False)
    worker = subprocess.Popen([sys.executable, "-m", "lola.cli", "worker"], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    samples: list[dict[str, Any]] = []
    try:
        t_ready = time.monotonic()
        while _metrics(port).get("lola_assigned_partitions", 0) < 4:
            if worker.poll() is not None or time.monotonic() - t_ready > READY_LIMIT_S:
                raise RuntimeError(f"the worker did not own 4 partitions within {READY_LIMIT_S:.0f} s")
            time.sleep(0.5)
        load.thread.start()
        t0 = time.monotonic()
        last = {"t": 0.0, "ckpt": _metrics(port).get("lola_checkpoint_bytes_total", 0.0)}

        def sample(phase: str) -> dict[str, Any]:
            m = _metrics(port)
            t = time.monotonic() - t0
            ck = m.get("lola_checkpoint_bytes_total", last["ckpt"])
            row = {"t_s": round(t, 1), "phase": phase, "worker_rss_mb": _rss_mb(worker.pid),
                   "broker_rss_mb": _rss_mb(broker.process.pid) if broker is not None else None,
                   "broker_cpu_s": _cpu_s(broker.process.pid) if broker is not None else None,
                   "lag": int(m.get("lola_consumer_lag", -1)), "sent": load.sent,
                   "records": int(m.get("lola_records_total", 0)),
                   "dead_letters": int(m.get("lola_dead_letters_total", 0)),
                   "duplicates": int(m.get("lola_duplicates_total", 0)),
                   "checkpoint_bytes_per_s": round((ck - last["ckpt"]) / max(t - last["t"], 1e-9)),
                   "experiments": int(m.get("lola_experiments", 0))}
            last.update(t=t, ckpt=ck)
            samples.append(row)
            return row

        while load.thread.is_alive():
            load.thread.join(SAMPLE_S)
            sample("load")
        if load.error is not None:
            raise load.error
        t_end = time.monotonic()
        drain_s = None
        while time.monotonic() - t_end < DRAIN_LIMIT_S:
            time.sleep(1.0)
            m = _metrics(port)
            if m.get("lola_records_total", 0) >= load.sent + len(load.exp_ids) * arms and m.get("lola_consumer_lag", 1) == 0:
                drain_s = round(time.monotonic() - t_end, 1)
                break
        sample("drained" if drain_s is not None else "not_drained")
    finally:
        stop_process(worker, 60)
        if broker is not None:
            broker.stop()
    load_rows = [r for r in samples if r["phase"] == "load"]
    after_1m = [r for r in load_rows if r["t_s"] >= 60.0]
    growth = None
    if after_1m and after_1m[0]["worker_rss_mb"]:
        growth = round((load_rows[-1]["worker_rss_mb"] - after_1m[0]["worker_rss_mb"]) / after_1m[0]["worker_rss_mb"], 4)

    def rss(key: str) -> dict[str, Any]:
        values = [r[key] for r in samples if r[key] is not None]
        first_minute = next((r[key] for r in after_1m), None)
        return {"first_sample": values[0] if values else None, "at_first_minute": first_minute,
                "end_of_load": load_rows[-1][key] if load_rows else None, "max": max(values, default=None)}
    sent_s = load_rows[-1]["t_s"] if load_rows else 0.0
    machine["loadavg_1m_at_end"] = _loadavg_1m()
    return {"benchmark": "soak", "minutes": minutes, "target_rate": rate, "experiments": experiments, "arms": arms,
            "sent": load.sent, "duplicates_sent": load.duplicates, "malformed_sent": load.malformed,
            "achieved_send_rate": round(load.sent / max(sent_s, 1e-9)), "samples": samples,
            "worker_rss_growth_after_first_minute": growth, "drain_s": drain_s,
            "worker_rss_mb": rss("worker_rss_mb"), "broker_rss_mb": rss("broker_rss_mb"),
            "broker_cpu_s": samples[-1]["broker_cpu_s"] if samples else None,
            "mean_checkpoint_bytes_per_s": round(sum(r["checkpoint_bytes_per_s"] for r in load_rows) / max(len(load_rows), 1)),
            "targets": {"worker_rss_growth_after_first_minute": "< 0.05", "drain_s": "<= 60"},
            "worker_log": log.name, "worker_log_tail": open(log.name).read()[-2000:],
            "broker": ({"config": "external", "bootstrap": bootstrap} if bootstrap else config.describe()),
            "machine": machine}


def register(app: typer.Typer) -> None:
    """Add ``lola bench soak``."""

    @app.command("soak")
    def soak(
        minutes: float = typer.Option(10.0, "--minutes", help="duration of the load"),
        rate: float = typer.Option(8_000.0, "--rate", help="events per second, fixed in absolute time"),
        experiments: int = typer.Option(2_000, "--experiments"),
        arms: int = typer.Option(4, "--arms"),
        seed: int = typer.Option(0, "--seed"),
        as_json: bool = typer.Option(False, "--json", help="print only the JSON result"),
        bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help="external broker (default: embedded Tansu)"),
        broker_config: str = typer.Option("memory-batched", "--broker-config",
                                          help="embedded broker configuration (lola broker --config)"),
    ) -> None:
        """Fixed-rate soak: worker and broker RSS every 10 s, lag, checkpoint bytes/s, drain time."""
        from lola.errors import ConfigError

        if not 0 < minutes <= 24 * 60 or not 0 < rate <= 1e6 or experiments < 1 or not 1 <= arms <= 256:
            raise ConfigError("need 0 < --minutes <= 1440, 0 < --rate <= 1e6, --experiments >= 1, 1 <= --arms <= 256")
        typer.echo(json.dumps(run_soak(bootstrap, minutes, rate, experiments, arms, seed, broker_config),
                              indent=None if as_json else 2))
