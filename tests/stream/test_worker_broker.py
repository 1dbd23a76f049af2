"""Worker tests against the real session Tansu broker (no Kafka mocks)."""

from __future__ import annotations

import random
import threading
import time
import urllib.request

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lola.stream import kafka as kf
from lola.stream.loadgen import open_stream, send


pytestmark = pytest.mark.broker


def _producer(s):
    from confluent_kafka import Producer

    return Producer(kf.producer_config(s))


def _send_in_background(s, records, rate, hold_tail=None, tail_rate=20):
    """Send ``records`` at ``rate`` per second on a thread.

    With ``hold_tail`` (a threading.Event) the last 10 % trickles at ``tail_rate`` per
    second until the event is set, then goes at full rate: the producer is still
    producing however long the test's kills take on a loaded machine.
    """
    errors = []

    def run():
        try:
            producer = _producer(s)
            if hold_tail is None:
                send(producer, s.events_topic, records, rate)
                return
            cut = len(records) * 9 // 10
            send(producer, s.events_topic, records[:cut], rate)
            i = cut
            while i < len(records) and not hold_tail.is_set():
                kf.produce(producer, s.events_topic, records[i][1], key=records[i][0])
                producer.poll(0)
                time.sleep(1.0 / tail_rate)
                i += 1
            send(producer, s.events_topic, records[i:], rate)
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, errors


def _log_events(worker) -> list[dict]:
    return worker.events()


def _wait_for_log(worker, msg: str, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for e in _log_events(worker):
            if e.get("msg") == msg:
                return e
        assert worker.proc.poll() is None, worker.log()
        time.sleep(0.2)
    pytest.fail(f"worker never logged {msg!r}: {worker.log()}")


def _partition_ends(s) -> dict[int, int]:
    """Number of records per events partition, counted by reading (Tansu's listed offsets can lag)."""
    conf = kf.consumer_config(s, "test-ends")
    ends = {}
    for p in range(s.partitions):
        last = -1
        for msg in kf.read_partition_to_end(conf, s.events_topic, p, 0):
            last = msg.offset()
        ends[p] = last + 1
    return ends


@pytest.mark.slow
def test_sigkill_at_random_points_loses_and_double_counts_nothing(stream_settings, worker_procs, helpers):
    # A short session timeout: a killed member must leave the group quickly, or the next
    # worker waits for its expiry before it is assigned anything.
    s = stream_settings(batch_size=300, checkpoint_interval_s=0.4, session_timeout_ms=2000)
    kf.ensure_topics(s)
    stream = open_stream(20_000, 12, 3, seed=11, duplicate_rate=0.05, malformed_rate=0.01)
    kills_done = threading.Event()
    sender, errors = _send_in_background(s, stream.records, rate=450, hold_tail=kills_done)
    rng = random.Random(2024)
    killed_while_working = killed_mid_stream = 0
    for i in range(6):
        w = worker_procs(s, f"killed{i}")
        # Start-up time varies a lot on a loaded machine: kill at a random point after the
        # worker has restored its partitions, while the stream is still arriving.
        _wait_for_log(w, "partitions assigned", timeout_s=90)
        time.sleep(rng.uniform(0.5, 2.5))
        killed_mid_stream += sender.is_alive()
        w.kill()
        killed_while_working += 1
    kills_done.set()
    final = worker_procs(s, "final")
    sender.join(120)
    assert not errors
    assert killed_mid_stream == 6  # every kill hit a worker while events were still arriving
    _wait_for_log(final, "partitions assigned")
    helpers.wait_for_counts(s, stream.truth, timeout_s=90)
    assert final.terminate() == 0, final.log()
    # The final worker republished every snapshot from its restored state on shutdown.
    helpers.wait_for_counts(s, stream.truth, timeout_s=10)
    assert killed_while_working == 6
    ends = _partition_ends(s)
    restored = {e["partition"]: e for e in _log_events(final) if e.get("msg") == "shard restored"}
    assert set(restored) == set(ends)
    assert all(restored[p]["from_checkpoint"] for p, end in ends.items() if end > 0)
    # Dead letters are at-least-once: de-duplicated by their source offset, one per malformed message.
    sources = {(h[kf.H_PARTITION], h[kf.H_OFFSET]) for h, _, _ in helpers.read_dead_letters(s)}
    assert len(sources) == stream.summary["malformed"]


@pytest.mark.slow
def test_three_workers_one_killed_still_exact(stream_settings, worker_procs, helpers):
    s = stream_settings(partitions=6, batch_size=500)
    kf.ensure_topics(s)
    stream = open_stream(12_000, 18, 2, seed=7, duplicate_rate=0.05, malformed_rate=0.01)
    workers = [worker_procs(s, f"member{i}") for i in range(3)]
    for w in workers:
        _wait_for_log(w, "partitions assigned", timeout_s=90)
    sender, errors = _send_in_background(s, stream.records, rate=1500)
    time.sleep(3.0)  # mid-stream: the group is serving and more events are on their way
    workers[1].kill()
    sender.join(120)
    assert not errors
    helpers.wait_for_counts(s, stream.truth, timeout_s=90)
    assert workers[0].terminate() == 0 and workers[2].terminate() == 0
    owners = [{p for e in _log_events(w) if e.get("msg") == "partitions assigned" for p in e["partitions"]}
              for w in workers]
    assert owners[1], "the killed worker never owned a partition: the test proved nothing"
    assert owners[1] <= owners[0] | owners[2], "the killed worker's partitions were not taken over"


def test_graceful_shutdown_checkpoints_commits_and_serves_health(stream_settings, worker_procs, helpers):
    from confluent_kafka import Consumer, TopicPartition

    from lola.stream.chain import select_chain

    s = stream_settings(checkpoint_interval_s=60.0)  # only SIGTERM writes the final checkpoint
    kf.ensure_topics(s)
    stream = open_stream(3000, 6, 2, seed=5)
    send(_producer(s), s.events_topic, stream.records)
    w = worker_procs(s, "graceful")
    _wait_for_log(w, "partitions assigned")
    helpers.wait_for_counts(s, stream.truth, timeout_s=60)
    port = next(e["metrics_port"] for e in _log_events(w) if e.get("msg") == "worker started")
    base = f"http://127.0.0.1:{port}"
    assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200
    assert urllib.request.urlopen(base + "/readyz", timeout=5).status == 200
    metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    assert 'lola_events_total{type="Impression"}' in metrics and "lola_checkpoint_age_seconds" in metrics
    assert w.terminate() == 0, w.log()
    assert any(e.get("msg") == "worker stopped" for e in _log_events(w))
    ends = _partition_ends(s)
    conf = kf.consumer_config(s, "test-state")
    for p, end in ends.items():
        records = [(m.key(), m.value()) for m in kf.read_partition_to_end(conf, s.state_topic, p, 0)]
        if end == 0:
            continue  # an empty partition has nothing to checkpoint
        assert records, f"no checkpoint for partition {p}"
        chain = select_chain(records, f"{s.group_id}:{s.events_topic}:{p}".encode())
        assert chain is not None and chain.next_offset == end  # the base and its deltas reach the end
    c = Consumer(kf.consumer_config(s))
    committed = c.committed([TopicPartition(s.events_topic, p) for p in ends], timeout=10)
    c.close()
    assert {tp.partition: tp.offset for tp in committed if ends[tp.partition]} == {p: e for p, e in ends.items() if e}


def test_duplicates_late_clicks_and_dead_letter_headers(stream_settings, thread_worker, helpers):
    s = stream_settings()
    kf.ensure_topics(s)
    stream = open_stream(4000, 5, 3, seed=9, duplicate_rate=0.15, malformed_rate=0.03, late_click_rate=0.2)
    send(_producer(s), s.events_topic, stream.records)
    tw = thread_worker(s)
    helpers.wait_for_counts(s, stream.truth, timeout_s=60)
    result = tw.stop()
    assert result["records"] == len(stream.records)
    m = tw.worker.metrics
    assert sum(m.duplicates.labels(t)._value.get() for t in ("impression", "click")) == stream.summary["duplicates"]
    assert m.late_events._value.get() == stream.summary["late_clicks"] > 0
    letters = helpers.read_dead_letters(s)
    reasons = [h[kf.H_REASON].decode() for h, _, _ in letters]
    assert reasons.count("late_click") == stream.summary["late_clicks"]
    assert len(letters) == stream.summary["late_clicks"] + stream.summary["malformed"]
    # Each dead letter carries the original bytes and points at its source record.
    conf = kf.consumer_config(s, "test-source")
    by_partition = {p: {m.offset(): m.value() for m in kf.read_partition_to_end(conf, s.events_topic, p, 0)}
                    for p in range(s.partitions)}
    for headers, _, value in letters:
        assert headers[kf.H_TOPIC].decode() == s.events_topic
        assert by_partition[int(headers[kf.H_PARTITION])][int(headers[kf.H_OFFSET])] == value


hostile_messages = st.lists(
    st.one_of(st.binary(max_size=64),
              st.dictionaries(st.sampled_from(["type", "event_id", "experiment_id", "variant_id", "ts", "v"]),
                              st.none() | st.integers(-3, 3) | st.text(max_size=5) | st.floats(allow_nan=True)
                              | st.sampled_from(["impression", "click"])).map(orjson.dumps)),
    min_size=5, max_size=25)


@settings(max_examples=2, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(hostile=hostile_messages)
def test_hypothesis_hostile_messages_go_to_dead_letters_and_valid_counts_hold(hostile, stream_settings,
                                                                               thread_worker, helpers):
    from lola.errors import EventError
    from lola.stream.events import decode

    s = stream_settings()
    kf.ensure_topics(s)
    stream = open_stream(800, 3, 2, seed=len(hostile), duplicate_rate=0.0, malformed_rate=0.0)
    bad = []
    for h in hostile:
        try:
            decode(h, b"exp-0")
        except EventError:
            bad.append(h)
    records = list(stream.records)
    for i, h in enumerate(bad):
        records.insert(len(stream.records) * 3 // 4 + i * 5 % 50, (b"exp-0", h))
    records.append((b"exp-1", b"x" * (s.max_message_bytes + 10)))  # oversized
    send(_producer(s), s.events_topic, records)
    tw = thread_worker(s)
    helpers.wait_for_counts(s, stream.truth, timeout_s=60)
    tw.stop()
    letters = helpers.read_dead_letters(s)
    assert sorted(v for _, _, v in letters) == sorted(bad + [records[-1][1]])
    assert all(h[kf.H_REASON] for h, _, _ in letters)


def test_dlq_replay_republishes_filtered_dead_letters(stream_settings, thread_worker, helpers):
    from lola.stream.dlq import replay_dead_letters

    s = stream_settings()
    kf.ensure_topics(s)
    early = [(b"e", orjson.dumps({"type": "impression", "event_id": f"i{i}", "experiment_id": "e",
                                  "variant_id": "a", "ts": 10.0 + i})) for i in range(3)]
    junk = [(b"e", b"{broken")]
    variant = [(b"e", orjson.dumps({"type": "variant", "experiment_id": "e", "variant_id": "a", "text": "A"}))]
    send(_producer(s), s.events_topic, early + junk + variant)
    tw = thread_worker(s)
    helpers.wait_for_counts(s, {"e": {"a": {"impressions": 0, "clicks": 0, "conversions": 0}}}, timeout_s=60)
    summary = replay_dead_letters(s, {"unknown_experiment"})
    assert summary["replayed"] == 3 and summary["skipped"] == 1
    helpers.wait_for_counts(s, {"e": {"a": {"impressions": 3, "clicks": 0, "conversions": 0}}}, timeout_s=60)
    tw.stop()


class OraclePriors:
    """Stands in for the LLM: a prior per headline text."""

    def __init__(self, table):
        self.table = table

    def predict(self, texts):
        return np.array([self.table[t] for t in texts], dtype=np.float64)


@pytest.mark.slow
def test_closed_loop_llm2ucbs_moves_traffic_to_the_better_headline(stream_settings, thread_worker, helpers):
    from lola.data.upworthy import HeadlineTest
    from lola.stream.loadgen import run_closed

    s = stream_settings(batch_size=500)
    kf.ensure_topics(s)
    test = HeadlineTest("synthetic", "eye", ("Dull headline", "Great headline"),
                        np.array([10_000, 10_000]), np.array([150, 450]))  # CTR 1.5% vs 4.5%
    tw = thread_worker(s, prior_provider=OraclePriors({"Dull headline": 0.02, "Great headline": 0.04}))
    summary = run_closed(s, [test], [2000], seed=3, inflight=64, policy="llm2ucb", n_aux=1000.0, timeout_s=120)
    tw.stop()
    (per_test,) = summary["per_test"].values()
    assert sum(per_test["impressions"]) == 2000
    assert per_test["best_arm"] == 1
    assert per_test["best_arm_share"] > 0.75, per_test
    assert tw.worker.metrics.priors_applied._value.get() == 2
