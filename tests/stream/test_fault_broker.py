"""Issue 15 against the real broker: crash-loop breaker, hostile set, oversized
checkpoints, offsets beyond the partition's end, one state topic per group."""

from __future__ import annotations

import json
import time
import uuid

import orjson
import pytest

from lola.stream import kafka as kf
from lola.stream.chain import restore as restore_chain
from lola.stream.chain import select_chain
from lola.stream.loadgen import open_stream, send
from lola.stream.processor import ShardProcessor

pytestmark = pytest.mark.broker


def _producer(s):
    from confluent_kafka import Producer

    return Producer(kf.producer_config(s))


def counts_view_now(s) -> dict:
    from lola.stream.snapshot import counts_view, read_snapshots

    return counts_view(read_snapshots(s))


def _one_partition_counted(stream_settings, thread_worker, helpers, events: int, seed: int):
    """A one-partition stream, counted by a worker that then stops (its checkpoint written)."""
    s = stream_settings(partitions=1)
    kf.ensure_topics(s)
    stream = open_stream(events, 2, 2, seed=seed, duplicate_rate=0.0, malformed_rate=0.0)
    send(_producer(s), s.events_topic, stream.records)
    tw = thread_worker(s)
    helpers.wait_for_counts(s, stream.truth, timeout_s=60)
    tw.stop()
    return s, stream


def _ev(**event) -> tuple[bytes, bytes]:
    return event["experiment_id"].encode(), orjson.dumps(event)


@pytest.mark.slow
def test_hostile_set_with_a_process_killing_record_is_survived_within_n_restarts(stream_settings, worker_procs,
                                                                                helpers):
    """Malformed bytes, huge numbers, far-future times and a record that kills the process
    (os._exit via the test-only hook), sent to a running worker that is restarted like a
    Kubernetes pod: up and healthy after at most N = 3 deaths, every bad record
    dead-lettered with a reason, every valid record counted exactly once."""
    s = stream_settings(batch_size=200, session_timeout_ms=2000, poison_after_deaths=3)
    kf.ensure_topics(s)
    token = uuid.uuid4().hex
    stream = open_stream(3000, 6, 2, seed=17, duplicate_rate=0.02, malformed_rate=0.0)
    now = time.time()
    imp = dict(type="impression", experiment_id="exp-0", variant_id="v0")
    bad = {
        "invalid_json": [(b"exp-0", b"\xff\xfe not json"), (b"exp-0", b"{\"type\": ")],
        "invalid_value": [_ev(type="conversion", experiment_id="exp-0", variant_id="v0", event_id="big1", value=1e308,
                              ts=now),
                          _ev(**imp, event_id="far", ts=1e30),
                          _ev(**imp, event_id="ms", ts=now * 1000)],
        "future_ts": [_ev(**imp, event_id="tomorrow", ts=now + 86_400)],
        "invalid_settings": [_ev(type="variant", experiment_id="exp-0x", variant_id="a", text="t",
                                 settings={"policy": "llm_bai", "n_aux": 2**63 - 1}),
                             _ev(type="variant", experiment_id="exp-0y", variant_id="a", text="t",
                                 settings={"conversion_weight": 1.7e308})],
        "poison": [_ev(**imp, event_id=f"crash-{token}", ts=now)],
    }
    records = list(stream.records)
    at = len(records) // 2
    hostile = [r for rs in bad.values() for r in rs]
    records[at:at] = hostile
    send(_producer(s), s.events_topic, records)
    crash_env = {"LOLA_TEST_CRASH_TOKEN": token}
    restarts = 0
    w = worker_procs(s, "pod0", env=crash_env)
    deadline = time.monotonic() + 240
    view: dict = {}
    while time.monotonic() < deadline:
        if w.proc.poll() is not None:
            assert w.proc.returncode == 70, w.log()  # died by the hook, not by anything else
            w.kill()
            restarts += 1
            assert restarts <= 3, "the breaker did not stop the crash loop"
            w = worker_procs(s, f"pod{restarts}", env=crash_env)
            continue
        view = counts_view_now(s)
        if view == stream.truth:
            break
        time.sleep(0.5)
    assert view == stream.truth, helpers.wait_for_counts(s, stream.truth, timeout_s=1)
    time.sleep(1.0)
    assert w.proc.poll() is None, "the worker is not up after the crash loop"
    assert restarts == 3, restarts  # one death with the record's batch in flight, two with it alone
    assert w.terminate() == 0, w.log()
    letters = helpers.read_dead_letters(s)
    got: dict[bytes, set[str]] = {}
    for headers, _, value in letters:
        got.setdefault(value, set()).add(headers[kf.H_REASON].decode())
    for reason, recs in bad.items():
        for _, value in recs:
            assert got.get(value) == {reason}, (reason, value[:60], got.get(value))
    assert len(got) == len(hostile)
    poison = next(h for h, _, v in letters if h[kf.H_REASON] == b"poison")
    assert b"died 3 times" in poison[kf.H_DETAIL]


def test_test_crash_hook_needs_a_long_token(stream_settings, monkeypatch):
    from lola.errors import ConfigError
    from lola.stream.worker import TEST_CRASH_ENV, Worker

    s = stream_settings()
    monkeypatch.setenv(TEST_CRASH_ENV, "short")
    with pytest.raises(ConfigError, match="at least 16"):
        Worker(s, serve_http=False)


def test_an_oversized_checkpoint_is_refused_and_the_worker_keeps_serving(stream_settings, thread_worker, helpers):
    """Issue 15: librdkafka's MSG_SIZE_TOO_LARGE escaped produce and crash-looped the worker.
    The limit is read from the broker (the state topic is created with 200 kB here)."""
    s = stream_settings(state_max_message_bytes=200_000, partitions=1)
    kf.ensure_topics(s)
    assert kf.topic_max_message_bytes(s, s.state_topic) == 200_000
    long_text = "x" * 9_000
    records = [_ev(type="variant", experiment_id="big", variant_id=f"v{i}", text=long_text + str(i)) for i in range(40)]
    records += [_ev(type="impression", experiment_id="big", variant_id=f"v{i % 40}", event_id=f"i{i}", ts=1.0)
                for i in range(400)]
    send(_producer(s), s.events_topic, records)
    tw = thread_worker(s)
    truth = {"big": {f"v{i}": {"impressions": 10, "clicks": 0, "conversions": 0} for i in range(40)}}
    helpers.wait_for_counts(s, truth, timeout_s=60)
    time.sleep(1.5)  # at least one periodic checkpoint attempt
    result = tw.stop()  # the final checkpoint is refused too: no exception
    assert result["records"] == len(records)
    assert tw.worker.metrics.checkpoints_refused.labels("oversized")._value.get() >= 1
    assert tw.worker.checkpoint_limit < 200_000
    conf = kf.consumer_config(s, "test-state")
    assert not [m for m in kf.read_partition_to_end(conf, s.state_topic, 0, 0)]


@pytest.mark.parametrize("policy", ["earliest", "latest", "fail"])
def test_a_checkpoint_beyond_the_partition_end_is_detected_and_reset(stream_settings, thread_worker, helpers, policy):
    """Issue 15: records below the checkpoint offset were skipped silently (topic recreated)."""
    from lola.errors import ConfigError

    s, stream = _one_partition_counted(stream_settings, thread_worker, helpers, 600, seed=4)
    conf = kf.consumer_config(s, "test-state")
    key = f"{s.group_id}:{s.events_topic}:0".encode()
    chain = select_chain([(m.key(), m.value()) for m in kf.read_partition_to_end(conf, s.state_topic, 0, 0)], key)
    # As if the events topic had been recreated: the stored checkpoint is far beyond its end
    # (a base in a newer epoch, as the next owner would write it).
    proc = restore_chain(chain)
    proc.next_offset = 10_000_000
    p = _producer(s)
    p.produce(s.state_topic, proc.to_checkpoint(s.events_topic, {"epoch": chain.max_epoch + 1, "owner": "test"}), key,
              partition=0)
    p.flush(10)
    extra = [_ev(type="impression", experiment_id="exp-0", variant_id="v0", event_id=f"new{i}", ts=1.7e9)
             for i in range(5)]
    send(p, s.events_topic, extra)
    tw2 = thread_worker(s.model_copy(update={"offset_reset_policy": policy}))
    if policy == "fail":
        with pytest.raises(ConfigError, match="beyond the partition's end"):
            deadline = time.monotonic() + 30
            while tw2.thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            tw2.stop()
        return
    truth = json.loads(json.dumps(stream.truth))
    if policy == "earliest":
        # state kept, the partition read again from its start: the old events are
        # duplicates of the dedup window, the new ones count
        truth["exp-0"]["v0"]["impressions"] += 5
    helpers.wait_for_counts(s, truth, timeout_s=60)
    deadline = time.monotonic() + 30
    while tw2.worker.shards.get(0) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    tw2.stop()
    assert tw2.worker.metrics.offset_resets.labels(policy)._value.get() == 1
    assert counts_view_now(s) == truth


def test_each_group_gets_its_own_state_topic_and_a_shared_one_still_restores(stream_settings, thread_worker,
                                                                             helpers):
    from lola.stream.settings import StreamSettings

    a = StreamSettings(bootstrap_servers="h:1", group_id="ga")
    b = StreamSettings(bootstrap_servers="h:1", group_id="gb")
    assert a.state_topic == "lola.state.ga" != b.state_topic == "lola.state.gb"
    assert a.inflight_topic == "lola.inflight.ga"
    # Shared on purpose: another group's records push ours out of the tail read first.
    s, stream = _one_partition_counted(stream_settings, thread_worker, helpers, 300, seed=8)
    p = _producer(s)
    for i in range(2 * (s.checkpoint_delta_max_chain + 2) + 10):
        p.produce(s.state_topic, ShardProcessor(0).to_checkpoint("other"), b"other-group:x:0", partition=0)
        p.flush(10)
    tw2 = thread_worker(s)
    deadline = time.monotonic() + 30
    while 0 not in tw2.worker.shards and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tw2.worker.shards[0].next_offset == len(stream.records)  # restored, not replayed from 0
    tw2.stop()


def test_an_upgrade_restores_from_the_legacy_shared_state_topic(stream_settings, thread_worker, helpers):
    """Builds before the per-group default wrote checkpoints to one shared topic. A worker
    upgraded in place (its own lola.state.<group> still empty) restores from there with
    exact counts instead of replaying from offset 0, and writes its next checkpoint to
    its own topic."""
    s, stream = _one_partition_counted(stream_settings, thread_worker, helpers, 300, seed=9)
    upgraded = s.model_copy(update={"state_topic": f"{s.state_topic}.{s.group_id}",
                                    "legacy_state_topic": s.state_topic})
    kf.ensure_topics(upgraded)
    tw2 = thread_worker(upgraded)
    deadline = time.monotonic() + 30
    while 0 not in tw2.worker.shards and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tw2.worker.shards[0].next_offset == len(stream.records)  # restored, not replayed from 0
    assert tw2.worker.metrics.legacy_restores._value.get() == 1
    assert counts_view_now(upgraded) == stream.truth
    tw2.stop()
    conf = kf.consumer_config(upgraded, "probe")
    assert [m for m in kf.read_partition_to_end(conf, upgraded.state_topic, 0, 0)]  # its own topic now


@pytest.mark.slow
def test_the_issue_70_mb_checkpoint_no_longer_kills_the_worker(stream_settings, thread_worker, helpers):
    """The issue's reproduction: 7,000 variants with 10,000-character texts on one experiment
    make a ~70 MB checkpoint, above the producer's 64 MiB message.max.bytes (librdkafka
    raised MSG_SIZE_TOO_LARGE from produce and the worker died on every restart). The arm
    limit (issue 19, 256 by default) is raised so the oversized state can still be built."""
    s = stream_settings(partitions=1, max_arms_per_experiment=10_000)
    kf.ensure_topics(s)
    records = [_ev(type="variant", experiment_id="e", variant_id=f"v{i}", text=("%05d" % i) * 2000)
               for i in range(7000)]
    records.append(_ev(type="impression", experiment_id="e", variant_id="v0", event_id="i0", ts=1.0))
    send(_producer(s), s.events_topic, records)
    tw = thread_worker(s)
    deadline = time.monotonic() + 120
    while (tw.worker.metrics.checkpoints_refused.labels("oversized")._value.get() < 1
           or tw.worker.shards[0].next_offset < len(records)):  # everything applied, serving from memory
        assert time.monotonic() < deadline and tw.thread.is_alive(), "no refusal seen"
        time.sleep(0.2)
    result = tw.stop()
    assert result["records"] == len(records)
    assert tw.worker.metrics.checkpoints._value.get() == 0


def test_a_snapshot_that_cannot_be_encoded_is_counted_and_the_worker_keeps_serving(stream_settings, thread_worker,
                                                                                  helpers, monkeypatch):
    """Snapshots are a side output: a bug in building or encoding one experiment's snapshot
    must not stop the partition. It is logged and counted; the other experiments publish,
    and a later publication of the experiment (here: a restarted worker) goes out."""
    from lola.stream import events as ev

    s = stream_settings(partitions=1)
    kf.ensure_topics(s)
    stream = open_stream(400, 2, 2, seed=21, duplicate_rate=0.0, malformed_rate=0.0)
    real = ev.encode_snapshot

    def broken_for_exp0(snap):
        if snap["experiment_id"] == "exp-0":
            raise ValueError("planted snapshot bug")
        return real(snap)

    monkeypatch.setattr(ev, "encode_snapshot", broken_for_exp0)
    send(_producer(s), s.events_topic, stream.records)
    tw = thread_worker(s)
    others = {e: v for e, v in stream.truth.items() if e != "exp-0"}
    deadline = time.monotonic() + 60
    while counts_view_now(s) != others or tw.worker.metrics.snapshot_errors._value.get() < 1:
        assert time.monotonic() < deadline and tw.thread.is_alive(), counts_view_now(s)
        time.sleep(0.2)
    monkeypatch.undo()
    assert tw.stop()["records"] == len(stream.records)
    thread_worker(s)  # restores and republishes every experiment's snapshot
    helpers.wait_for_counts(s, stream.truth, timeout_s=60)
