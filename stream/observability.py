"""Worker operations: Prometheus metrics, /healthz and /readyz, JSON logs.

No confluent_kafka here. Each worker gets its own :class:`WorkerMetrics` registry so
several workers can share one process (tests, the benchmark).
"""

from __future__ import annotations

import bisect
import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

_STD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra={...}`` fields are included."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure_json_logging(level: str = "INFO") -> None:
    """Route the ``lola`` loggers to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("lola")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def observe_many(histogram: Histogram, value: float, n: int) -> None:
    """``histogram.observe(value)`` ``n`` times, in O(1).

    Every decision of a batch has the same latency (the batch's); observing it once per
    decision cost ~630 ns each on the decision path. prometheus-client has no weighted
    observe, so this adds ``n`` to the one bucket and ``n * value`` to the sum through its
    (long-stable) internals; tests/stream/test_operations_signals.py checks the exposition
    equals ``n`` plain observes, so a library change that breaks this fails a test.
    """
    histogram._sum.inc(value * n)
    histogram._buckets[bisect.bisect_left(histogram._upper_bounds, value)].inc(n)


class WorkerMetrics:
    """The worker's Prometheus metrics (names prefixed ``lola_``)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.events = Counter("lola_events_total", "Input records applied, by event type", ["type"], registry=r)
        self.records = Counter("lola_records_total", "Input records consumed (any outcome)", registry=r)
        # Kept for the demo's dashboard; in Prometheus prefer rate(lola_records_total[1m]).
        self.events_per_s = Gauge("lola_events_per_second", "Input records consumed per second (last interval)", registry=r)
        self.decisions = Counter("lola_decisions_total", "Decisions produced", registry=r)
        self.dead_letters = Counter("lola_dead_letters_total", "Dead letters produced, by reason", ["reason"], registry=r)
        self.duplicates = Counter("lola_duplicates_total", "Duplicate events and retried requests dropped, by type",
                                  ["type"], registry=r)
        self.dedup_budget_evictions = Counter("lola_dedup_budget_evictions_total",
                                              "De-duplication entries dropped before their window ended because "
                                              "the byte budget bound (the window shrank)", registry=r)
        self.evictions = Counter("lola_experiments_evicted_total", "Archived experiments evicted (tombstoned)",
                                 registry=r)
        self.late_events = Counter("lola_late_events_total", "Clicks/conversions outside the attribution window",
                                   registry=r)
        self.prior_fallbacks = Counter("lola_prior_fallbacks_total", "Variants left without a prior, by reason",
                                       ["reason"], registry=r)
        self.priors_applied = Counter("lola_priors_applied_total", "Priors applied to arms", registry=r)
        self.lag = Gauge("lola_consumer_lag", "Records behind the log end, by partition", ["partition"], registry=r)
        self.checkpoint_age = Gauge("lola_checkpoint_age_seconds", "Seconds since the oldest shard checkpoint",
                                    registry=r)
        self.checkpoints = Counter("lola_checkpoints_total", "Checkpoint records written", registry=r)
        self.checkpoint_bytes = Counter("lola_checkpoint_bytes_total", "Bytes of checkpoint records produced to the "
                                        "state topic (its write rate: docs/operations/checkpoints.md)", registry=r)
        self.checkpoint_seconds = Histogram("lola_checkpoint_seconds", "Time to write one checkpoint round",
                                            registry=r)
        self.partitions = Gauge("lola_assigned_partitions", "Partitions this worker owns", registry=r)
        self.produce_errors = Counter("lola_produce_errors_total", "Failed output deliveries", registry=r)
        self.output_retries = Counter("lola_output_retries_total",
                                      "Outputs produced again after a failed delivery (checkpoints wait for them)",
                                      registry=r)
        self.checkpoints_refused = Counter("lola_checkpoints_refused_total",
                                           "Checkpoints not written, by reason (oversized: above the state topic's "
                                           "max.message.bytes; the worker keeps serving from memory)",
                                           ["reason"], registry=r)
        self.offset_resets = Counter("lola_offset_resets_total",
                                     "Checkpoints found beyond their partition's end (topic recreated), by policy",
                                     ["policy"], registry=r)
        self.rollbacks = Counter("lola_shard_rollbacks_total",
                                 "Batches rolled back and re-applied record by record after an unexpected error",
                                 registry=r)
        self.inflight_marker_failures = Counter("lola_inflight_marker_failures_total",
                                                "In-flight markers not acknowledged (batch applied unprotected by the "
                                                "crash-loop breaker)", registry=r)
        self.legacy_restores = Counter("lola_legacy_restores_total",
                                       "Partitions restored from the legacy shared state topic (upgrade path)",
                                       registry=r)
        self.decision_seconds = Histogram(
            "lola_decision_seconds", "Per decision: from its batch leaving the consumer to the decision queued for "
            "produce (the worker's share of decision latency; the broker hops come on top)", registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
        self.prior_seconds = Histogram("lola_prior_seconds", "Duration of one prior provider call (a batch of variants)",
                                       registry=r, buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.state_bytes = Gauge("lola_state_bytes", "Size of the partition's last serialised full checkpoint "
                                 "(a chain's base: state + dedup window)", ["partition"], registry=r)
        self.checkpoint_limit_bytes = Gauge("lola_checkpoint_limit_bytes", "Largest checkpoint the state topic "
                                            "takes (max.message.bytes less overhead)", registry=r)
        self.experiments = Gauge("lola_experiments", "Experiments held by this worker's partitions", registry=r)
        self.context_never_joined = Gauge("lola_context_never_joined", "Contextual decisions whose context left the "
                                          "join window with no outcome (cumulative, per partition; docs/contextual.md)",
                                          ["partition"], registry=r)
        self.join_window_bytes = Gauge("lola_join_window_bytes", "Accounted bytes of the contextual join window",
                                       ["partition"], registry=r)
        self.prior_model = Info("lola_prior_model", "The prior provider in use and its model version", registry=r)
        self.snapshot_errors = Counter("lola_snapshot_errors_total",
                                       "Policy snapshots that could not be built or encoded (a bug; logged, skipped)",
                                       registry=r)
        self.batch_seconds = Histogram("lola_batch_seconds", "Processing time per consumed batch", registry=r,
                                       buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))


class HealthServer:
    """Serves ``/metrics``, ``/healthz`` (loop alive) and ``/readyz`` (partitions restored)."""

    def __init__(self, metrics: WorkerMetrics, host: str, port: int,
                 healthy: Callable[[], bool], ready: Callable[[], bool]) -> None:
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?")[0]
                if path == "/metrics":
                    body, code, ctype = generate_latest(registry), 200, CONTENT_TYPE_LATEST
                elif path == "/healthz":
                    ok = healthy()
                    body, code, ctype = (b"ok\n" if ok else b"stalled\n"), (200 if ok else 503), "text/plain"
                elif path == "/readyz":
                    ok = ready()
                    body, code, ctype = (b"ready\n" if ok else b"not ready\n"), (200 if ok else 503), "text/plain"
                else:
                    body, code, ctype = b"not found\n", 404, "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="lola-http", daemon=True)

    def start(self) -> "HealthServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RateMeter:
    """Events per second over the last interval, for the gauge."""

    def __init__(self) -> None:
        self.count = 0
        self.t0 = time.monotonic()

    def add(self, n: int) -> None:
        self.count += n

    def rate(self) -> float:
        now = time.monotonic()
        dt = now - self.t0
        r = self.count / dt if dt > 0 else 0.0
        self.count, self.t0 = 0, now
        return r
