"""Incremental checkpoints against the real broker: a worker killed (SIGKILL) mid-chain."""

from __future__ import annotations

import time

import pytest

from lola.stream import kafka as kf
from lola.stream.chain import select_chain
from lola.stream.loadgen import open_stream, send

pytestmark = pytest.mark.broker


def _producer(s):
    from confluent_kafka import Producer

    return Producer(kf.producer_config(s))


def _chain(s):
    conf = kf.consumer_config(s, "test-chain")
    records = [(m.key(), m.value()) for m in kf.read_partition_to_end(conf, s.state_topic, 0, 0)]
    return select_chain(records, f"{s.group_id}:{s.events_topic}:0".encode()), records


def _wait_chain_end(s, end: int, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        chain, records = _chain(s)
        if chain is not None and chain.next_offset == end:
            return chain, records
        time.sleep(0.2)
    pytest.fail(f"the checkpoint chain never reached offset {end}: {chain and chain.next_offset}")


def test_a_worker_killed_mid_chain_restores_base_plus_deltas_and_counts_exactly(stream_settings, worker_procs,
                                                                                helpers):
    s = stream_settings(partitions=1, batch_size=200, checkpoint_interval_s=0.3, session_timeout_ms=2000)
    kf.ensure_topics(s)
    stream = open_stream(3000, 6, 3, seed=31, duplicate_rate=0.05, malformed_rate=0.0)
    records = stream.records
    first, trickle, rest = records[:1500], records[1500:1504], records[1504:]
    p = _producer(s)
    send(p, s.events_topic, first)
    w = worker_procs(s, "first")
    _wait_chain_end(s, len(first))
    # A few records one at a time: each round after the last base is a small delta.
    for i, rec in enumerate(trickle, start=len(first) + 1):
        send(p, s.events_topic, [rec])
        chain, state_records = _wait_chain_end(s, i)
    assert chain.deltas, "the chain ends in deltas"
    assert any(b":delta:" in k for k, _ in state_records)
    w.kill()  # SIGKILL: no final checkpoint, the chain on the topic is what the next owner gets
    send(p, s.events_topic, rest)
    w2 = worker_procs(s, "second")
    helpers.wait_for_counts(s, stream.truth, timeout_s=90)
    restored = [e for e in w2.events() if e.get("msg") == "shard restored"]
    assert restored and restored[0]["deltas"] == len(chain.deltas), restored
    assert restored[0]["next_offset"] == chain.next_offset
    assert w2.terminate() == 0, w2.log()
    helpers.wait_for_counts(s, stream.truth, timeout_s=10)
    # The new owner started its own chain in a higher epoch, and it restores the stream's end.
    chain2, _ = _chain(s)
    assert chain2.epoch > chain.epoch and chain2.next_offset == len(records)
