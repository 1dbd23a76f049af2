"""Experiment and variant lifecycle through the real (embedded Tansu) broker.

Every wait polls the snapshots/dead-letter/decisions topics with a deadline; nothing
relies on a fixed sleep or on the order of two asynchronous outputs.
"""

from __future__ import annotations

import gc
import json
import time

import orjson
import pytest

from lola.cli import main
from lola.stream import kafka as kf
from lola.stream.shard import BatchOutput
from lola.stream.snapshot import read_snapshots

pytestmark = pytest.mark.broker
DEADLINE_S = 60.0


def _until(what, probe):
    deadline = time.monotonic() + DEADLINE_S
    value = None
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"never: {what} (last: {value!r})")


def _send(s, events, timestamp_ms=None):
    from confluent_kafka import Producer

    p = Producer(kf.producer_config(s))
    for e in events:
        kw = {} if timestamp_ms is None else {"timestamp": timestamp_ms}
        kf.produce(p, s.events_topic, orjson.dumps(e), key=e["experiment_id"].encode(), **kw)
    p.flush(30)


def _snap(s, exp_id, pred):
    return _until(f"snapshot of {exp_id} matching", lambda: (lambda snap: snap if snap and pred(snap) else None)(
        read_snapshots(s).get(exp_id)))


def _topic_values(s, topic):
    from confluent_kafka import Consumer

    conf = kf.consumer_config(s, "test-lifecycle-reader")
    c = Consumer(conf)
    md = c.list_topics(topic, timeout=10).topics[topic]
    c.close()
    return [(dict(m.headers() or ()), m.value()) for p in sorted(md.partitions)
            for m in kf.read_partition_to_end(conf, topic, p, 0)]


class Gate:
    def check(self, experiment_id, variant_id, text):
        return {"p": ("pending", "review"), "x": ("blocked", "health claim")}.get(variant_id, ("active", None))


def test_every_experiment_action_through_the_broker(stream_settings, thread_worker):
    s = stream_settings()
    kf.ensure_topics(s)
    tw = thread_worker(s)
    var = lambda e, v: {"type": "variant", "experiment_id": e, "variant_id": v, "text": f"{v} of {e}"}
    act = lambda e, a, **kw: {"type": "experiment", "experiment_id": e, "action": a, **kw}
    imp = lambda e, v, i, ts: {"type": "impression", "experiment_id": e, "variant_id": v, "event_id": i, "ts": ts}
    _send(s, [act("e", "create", settings={"policy": "ucb", "attribution_window_s": 5}), var("e", "a"), var("e", "b"),
              act("e", "update", settings={"alpha": 0.25}), var("old", "a")]
          + [imp("e", "b", f"i{i}", 1000.0 + i) for i in range(3)])
    _snap(s, "e", lambda x: x["status"] == "running" and x["arms"]["b"]["impressions"] == 3)
    _snap(s, "old", lambda x: x["arms"]["a"]["state"] == "active")  # implicit creation still works
    _send(s, [act("e", "pause"), imp("e", "a", "p1", 1010.0)])
    _snap(s, "e", lambda x: x["status"] == "paused")
    _send(s, [act("e", "resume"), imp("e", "a", "r1", 1011.0)])
    _snap(s, "e", lambda x: x["status"] == "running" and x["arms"]["a"]["impressions"] == 1)
    _send(s, [act("e", "stop", reason="done")]
          + [{"type": "decision_request", "experiment_id": "e", "request_id": f"q{i}"} for i in range(3)])
    snap = _snap(s, "e", lambda x: x["status"] == "stopped")
    assert snap["arms"]["b"]["active"] and not snap["arms"]["a"]["active"]
    decided = _until("3 decisions", lambda: [orjson.loads(v) for _, v in _topic_values(s, s.decisions_topic)
                                             if v and orjson.loads(v)["experiment_id"] == "e"][2:] and
                     [orjson.loads(v) for _, v in _topic_values(s, s.decisions_topic)])
    assert {(d["variant_id"], d["propensity"]) for d in decided} == {("b", 1.0)}
    now_ms = int(time.time() * 1000)
    _send(s, [act("e", "archive")], timestamp_ms=now_ms)
    _snap(s, "e", lambda x: x["status"] == "archived")
    # log time moves on by more than the 5 s attribution window: the experiment is evicted (tombstone)
    _send(s, [imp("e", "a", "later", 1020.0)], timestamp_ms=now_ms + 10_000)  # same partition: its log time
    _until("tombstone of e", lambda: "e" not in read_snapshots(s))
    _until("eviction counted", lambda: tw.worker.metrics.evictions._value.get() == 1)
    # The idle worker holds nothing of its last batch: as locals of its loop, that batch's
    # output (the ids it evicted) and messages lived until the next record, each id keeping a
    # heap page resident after the trim (100k archived experiments: +12 % RSS instead of +2 %).
    _until("the evicting batch released", lambda: not [
        o for o in gc.get_objects() if type(o) is BatchOutput and "e" in o.evicted])
    tw.stop()


def test_variant_states_the_gate_and_the_cli_through_the_broker(stream_settings, thread_worker, capsys):
    s = stream_settings()
    kf.ensure_topics(s)
    tw = thread_worker(s, gate=Gate())
    var = lambda v: {"type": "variant", "experiment_id": "g", "variant_id": v, "text": f"text {v}"}
    _send(s, [var("a"), var("p"), var("x"), var("r"),
              {"type": "variant", "action": "retire", "experiment_id": "g", "variant_id": "r", "text": ""}])
    snap = _snap(s, "g", lambda x: len(x["arms"]) == 4 and x["arms"]["r"]["state"] == "retired")
    assert {v: (a["state"], a["active"]) for v, a in snap["arms"].items()} == {
        "a": ("active", True), "p": ("pending", False), "x": ("blocked", False), "r": ("retired", False)}
    assert snap["arms"]["x"]["state_reason"] == "health claim"
    letters = _until("noncompliant dead letter", lambda: [h for h, _ in _topic_values(s, s.deadletter_topic)
                                                          if h.get(kf.H_REASON) == b"noncompliant"])
    assert len(letters) == 1
    tw.worker.request_variant_state("g", "p", "active", "approved")
    _snap(s, "g", lambda x: x["arms"]["p"]["state"] == "active" and x["arms"]["p"]["active"])
    # the CLI: archive produces the experiment event; list and show read the snapshots topic
    prefix = s.events_topic.rsplit(".", 1)[0]
    cli = ["--bootstrap", s.bootstrap_servers, "--topic-prefix", prefix]
    main(["experiments", "archive", "g", "--reason", "test over", *cli])
    _snap(s, "g", lambda x: x["status"] == "archived")
    capsys.readouterr()
    main(["experiments", "list", "--json", "--status", "archived", *cli])
    rows = json.loads(capsys.readouterr().out)
    assert [(r["experiment_id"], r["variants"]) for r in rows] == [("g", {"active": 2, "blocked": 1, "retired": 1})]
    main(["experiments", "show", "g", *cli])
    assert json.loads(capsys.readouterr().out)["arms"]["x"]["state"] == "blocked"
    tw.stop()
