"""``lola loadgen``: seeded open-loop event streams and a closed-loop ad-server simulator.

Open mode
---------
:func:`open_stream` builds, from a seed alone, the variant events of ``E`` experiments
with ``K`` arms and then ``N`` valid impression/click events (clicks follow their
impression at the arm's CTR and name it by ``impression_id``), mixed with duplicates
(the very same bytes again), malformed messages and, if asked, late clicks. It also
returns the exact expected counts (the *truth*): what a correct worker's snapshot
must show.

Closed mode
-----------
:func:`run_closed` replays Upworthy headline tests as an ad server would: it registers
each test's headlines as variants, sends decision requests, reads the decisions and
emits the impression plus a Bernoulli click at the chosen headline's true CTR
(clicks / impressions in the archive). It summarises the clicks earned and each
test's allocation.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import orjson

MALFORMED_KINDS = ("invalid_json", "missing_field", "wrong_type", "negative", "unknown_type", "not_object",
                   "unknown_variant")


@dataclass
class OpenStream:
    records: list[tuple[bytes, bytes]]                 # (key, value) in send order
    truth: dict[str, dict[str, dict[str, int]]]
    summary: dict[str, Any] = field(default_factory=dict)


def open_stream(events: int, experiments: int, arms: int, seed: int, duplicate_rate: float = 0.05,
                malformed_rate: float = 0.01, late_click_rate: float = 0.0, prefix: str = "exp",
                attribution_window_s: float = 86_400.0, policy: str | None = None) -> OpenStream:
    """Build a seeded open-mode stream (see module docstring); nothing is sent."""
    rng = np.random.default_rng(seed)
    exp_ids = [f"{prefix}-{i}" for i in range(experiments)]
    ctrs = rng.uniform(0.02, 0.3, size=(experiments, arms))
    truth = {e: {f"v{k}": {"impressions": 0, "clicks": 0, "conversions": 0} for k in range(arms)} for e in exp_ids}
    records: list[tuple[bytes, bytes]] = []
    for i, e in enumerate(exp_ids):
        for k in range(arms):
            ev: dict[str, Any] = {"v": 1, "type": "variant", "experiment_id": e, "variant_id": f"v{k}",
                                  "text": f"headline {k} of {e}"}
            if k == 0:
                ev["settings"] = {"attribution_window_s": attribution_window_s,
                                  **({"policy": policy} if policy else {})}
            records.append((e.encode(), orjson.dumps(ev)))
    sent_valid: list[tuple[bytes, bytes]] = []
    pending_clicks: list[tuple[int, int, bytes, bytes]] = []  # heap of (due step, seq, key, value)
    n_valid = n_dup = n_bad = n_late = 0
    ts0 = 1_700_000_000.0
    step = 0
    while n_valid < events:
        step += 1
        ts = ts0 + step * 0.01
        if pending_clicks and pending_clicks[0][0] <= step:
            _, _, key, value = heapq.heappop(pending_clicks)
            records.append((key, value)); sent_valid.append((key, value)); n_valid += 1
            c = orjson.loads(value)
            truth[c["experiment_id"]][c["variant_id"]]["clicks"] += 1
            continue
        u = rng.random()
        if u < duplicate_rate and sent_valid:
            records.append(sent_valid[int(rng.integers(len(sent_valid)))]); n_dup += 1
            continue
        if u < duplicate_rate + malformed_rate:
            records.append(_malformed(rng, exp_ids, arms, step)); n_bad += 1
            continue
        i = int(rng.integers(experiments)); k = int(rng.integers(arms)); e = exp_ids[i]
        imp_id = f"{prefix}-i{step}"
        value = orjson.dumps({"v": 1, "type": "impression", "event_id": imp_id, "experiment_id": e,
                              "variant_id": f"v{k}", "ts": ts})
        records.append((e.encode(), value)); sent_valid.append((e.encode(), value)); n_valid += 1
        truth[e][f"v{k}"]["impressions"] += 1
        if rng.random() < ctrs[i, k]:
            late = rng.random() < late_click_rate
            click_ts = ts + (attribution_window_s + 60.0 if late else float(rng.uniform(0.1, 30.0)))
            click = orjson.dumps({"v": 1, "type": "click", "event_id": f"{prefix}-c{step}", "experiment_id": e,
                                  "variant_id": f"v{k}", "ts": click_ts, "impression_id": imp_id})
            if late:
                records.append((e.encode(), click)); n_late += 1
            elif n_valid < events:
                heapq.heappush(pending_clicks, (step + int(rng.integers(1, 20)), step, e.encode(), click))
    summary = {"mode": "open", "seed": seed, "experiments": experiments, "arms": arms, "valid_events": n_valid,
               "duplicates": n_dup, "malformed": n_bad, "late_clicks": n_late, "records": len(records),
               "variant_events": experiments * arms}
    return OpenStream(records, truth, summary)


def _malformed(rng: np.random.Generator, exp_ids: list[str], arms: int, step: int) -> tuple[bytes, bytes]:
    e = exp_ids[int(rng.integers(len(exp_ids)))]
    kind = MALFORMED_KINDS[int(rng.integers(len(MALFORMED_KINDS)))]
    base = {"v": 1, "type": "impression", "event_id": f"bad-{step}", "experiment_id": e, "variant_id": "v0",
            "ts": 1_700_000_000.0}
    if kind == "invalid_json":
        value = b'{"type": "impression", "experiment_id": ' + e.encode() + b"}"
    elif kind == "missing_field":
        base.pop("variant_id"); value = orjson.dumps(base)
    elif kind == "wrong_type":
        base["ts"] = "yesterday"; value = orjson.dumps(base)
    elif kind == "negative":
        base["ts"] = -5.0; value = orjson.dumps(base)
    elif kind == "unknown_type":
        base["type"] = "purchase"; value = orjson.dumps(base)
    elif kind == "not_object":
        value = orjson.dumps([e, step])
    else:
        base["variant_id"] = f"v{arms + 7}"; value = orjson.dumps(base)
    return e.encode(), value


def send(producer: Any, topic: str, records: Iterator[tuple[bytes, bytes]] | list, rate: float = 0.0) -> int:
    """Produce records in order (optionally paced to ``rate`` per second); returns the count."""
    from lola.stream.kafka import produce

    n = 0
    t0 = time.perf_counter()
    for key, value in records:
        produce(producer, topic, value, key=key)
        n += 1
        if rate > 0 and n % 100 == 0:
            ahead = n / rate - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
        if n % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if remaining:
        from lola.errors import BrokerError

        raise BrokerError(f"{remaining} records not delivered within 60s")
    return n


# --------------------------------------------------------------------------- closed mode

#: Segments of the contextual closed loop (the replay's: they hash to distinct slots at user_dim 16).
SEGMENTS = ("seg0", "seg1", "seg2", "seg3")


def experiment_id(run_id: str, test: Any) -> str:
    """The experiment id the closed loop gives a headline test: ``<run id>-<test id>-<eyecatcher id>``."""
    return f"{run_id}-{test.test_id}-{test.eyecatcher_id}"[:200]


def variant_id(index: int) -> str:
    """The variant id of a test's ``index``-th headline (archive order)."""
    return f"h{index}"


def _arm_stats(alloc: np.ndarray, clicks: np.ndarray, test: Any) -> dict[str, Any]:
    ctrs = test.ctrs
    best = test.best
    total = int(alloc.sum())
    return {"impressions": alloc.astype(int).tolist(), "clicks": clicks.astype(int).tolist(),
            "true_ctr": [round(float(c), 6) for c in ctrs], "best_arm": best,
            "best_arm_share": (float(alloc[best]) / total) if total else 0.0,
            "clicks_earned": int(clicks.sum()),
            "expected_clicks_uniform": float(total * test.uniform_ctr),
            "expected_clicks_oracle": float(total * test.oracle_ctr)}


def run_closed(settings: Any, tests: list, impressions_per_test: list[int], seed: int, rate: float = 0.0,
               inflight: int = 256, run_id: str | None = None, policy: str | None = None,
               n_aux: float | None = None, alpha: float | None = None, timeout_s: float = 600.0,
               progress: Any = None, contextual: dict | None = None) -> dict[str, Any]:
    """Closed-loop ad-server simulation over Upworthy ``HeadlineTest`` objects (see module docstring).

    ``contextual``: the experiments' ``settings.contextual`` (docs/contextual.md); each request then
    carries one of :data:`SEGMENTS` (equal shares) and 8 standard-normal noise fields, and a
    headline's CTR for a segment is its archive CTR times a factor drawn from U[0.7, 1.3] per
    (test, segment, headline), capped at 1: ``lola replay contextual``'s world, served live.
    """
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

    from lola.errors import BrokerError
    from lola.stream import kafka as kf

    kf.ensure_topics(settings)
    rng = np.random.default_rng(seed)
    run_id = run_id or f"run{seed}-{int(time.time() * 1000) % 10**9}"
    producer = Producer(kf.producer_config(settings, **{"linger.ms": 1}))
    consumer = Consumer(kf.consumer_config(settings, f"lola-loadgen-{run_id}", **{"fetch.wait.max.ms": 5}))
    md = consumer.list_topics(settings.decisions_topic, timeout=10).topics[settings.decisions_topic]
    consumer.assign([TopicPartition(settings.decisions_topic, p, -2) for p in md.partitions])  # -2: beginning
    exp_ids = [experiment_id(run_id, t) for t in tests]
    budget = np.asarray(impressions_per_test, dtype=np.int64)
    alloc = [np.zeros(t.n_arms) for t in tests]
    clicks = [np.zeros(t.n_arms) for t in tests]
    settings_obj = {k: v for k, v in (("policy", policy), ("n_aux", n_aux), ("alpha", alpha),
                                      ("contextual", contextual)) if v is not None}
    factors = [rng.uniform(0.7, 1.3, (len(SEGMENTS), t.n_arms)) for t in tests] if contextual is not None else None
    oracle_ctx = 0.0
    for i, t in enumerate(tests):
        for k, text in enumerate(t.headlines):
            ev: dict[str, Any] = {"v": 1, "type": "variant", "experiment_id": exp_ids[i], "variant_id": variant_id(k),
                                  "text": text}
            if k == 0 and settings_obj:
                ev["settings"] = settings_obj
            kf.produce(producer, settings.events_topic, orjson.dumps(ev), key=exp_ids[i].encode())
    producer.flush(30)
    sent = np.zeros(len(tests), dtype=np.int64)
    outstanding: dict[str, tuple[int, float]] = {}
    latencies: list[float] = []
    done = 0
    total = int(budget.sum())
    t_start = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    req_n = 0
    while done < total:
        if time.monotonic() > deadline:
            raise BrokerError(f"closed loop timed out after {timeout_s:.0f}s with {done}/{total} impressions "
                              f"(is `lola worker` running on {settings.events_topic}?)")
        # Send requests while the in-flight window and the rate allow.
        open_tests = np.flatnonzero(sent < budget)
        while len(outstanding) < inflight and len(open_tests):
            if rate > 0 and req_n >= rate * (time.perf_counter() - t_start):
                break
            i = int(open_tests[int(rng.integers(len(open_tests)))])
            rid = f"{run_id}-r{req_n}"
            req_n += 1
            now = time.time()
            request: dict[str, Any] = {"v": 1, "type": "decision_request", "request_id": rid,
                                       "experiment_id": exp_ids[i], "ts": now}
            seg = -1
            if factors is not None:
                seg = int(rng.integers(len(SEGMENTS)))
                request["context"] = {"segment": SEGMENTS[seg],
                                      **{f"noise_{j}": float(v) for j, v in enumerate(rng.standard_normal(8))}}
                oracle_ctx += float(np.minimum(np.asarray(tests[i].ctrs) * factors[i][seg], 1.0).max())
            kf.produce(producer, settings.events_topic, orjson.dumps(request), key=exp_ids[i].encode())
            outstanding[rid] = (i, time.perf_counter(), seg)
            sent[i] += 1
            if sent[i] >= budget[i]:
                open_tests = np.flatnonzero(sent < budget)
        producer.poll(0)
        for msg in consumer.consume(1000, 0.002):  # waits for 1000 msgs or the timeout
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    raise BrokerError.from_kafka_error("reading decisions", msg.error())
                continue
            d = orjson.loads(msg.value())
            entry = outstanding.pop(d.get("request_id"), None)
            if entry is None:
                continue  # another run's decision, or a re-emitted duplicate
            i, t_sent, seg = entry
            latencies.append((time.perf_counter() - t_sent) * 1000.0)
            k = int(d["variant_id"][1:])
            now = time.time()
            imp_id = f"{d['request_id']}-imp"
            kf.produce(producer, settings.events_topic,
                       orjson.dumps({"v": 1, "type": "impression", "event_id": imp_id, "experiment_id": exp_ids[i],
                                     "variant_id": d["variant_id"], "ts": now, "request_id": d["request_id"]}),
                       key=exp_ids[i].encode())
            alloc[i][k] += 1
            ctr = tests[i].ctrs[k] if seg < 0 else min(1.0, tests[i].ctrs[k] * factors[i][seg, k])
            if rng.random() < ctr:
                clicks[i][k] += 1
                kf.produce(producer, settings.events_topic,
                           orjson.dumps({"v": 1, "type": "click", "event_id": f"{d['request_id']}-clk",
                                         "experiment_id": exp_ids[i], "variant_id": d["variant_id"],
                                         "ts": now, "impression_id": imp_id}), key=exp_ids[i].encode())
            done += 1
            if progress is not None:
                progress(1)
    producer.flush(30)
    consumer.close()
    elapsed = time.perf_counter() - t_start
    per_test = {}
    for i, t in enumerate(tests):
        per_test[exp_ids[i]] = {"test_id": t.test_id, "headlines": list(t.headlines), **_arm_stats(alloc[i], clicks[i], t)}
    earned = int(sum(c.sum() for c in clicks))
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    return {"mode": "closed", "run_id": run_id, "seed": seed, "tests": len(tests), "impressions": total,
            "clicks_earned": earned,
            "expected_clicks_uniform": float(sum(v["expected_clicks_uniform"] for v in per_test.values())),
            "expected_clicks_oracle": float(sum(v["expected_clicks_oracle"] for v in per_test.values())),
            **({"expected_clicks_segment_oracle": oracle_ctx} if factors is not None else {}),
            "seconds": elapsed, "decisions_per_s": total / elapsed if elapsed > 0 else 0.0,
            "decision_latency_p50_ms": float(np.percentile(lat, 50)),
            "decision_latency_p99_ms": float(np.percentile(lat, 99)),
            "per_test": per_test}
