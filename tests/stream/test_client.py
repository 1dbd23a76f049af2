"""``lola.client`` (the top-level client/ package): builders pure, producer and reader against the real broker.

Kept beside the stream tests because it needs their broker fixtures (tests/ has no packages).
"""

from __future__ import annotations

import gc
import time

import orjson
import pytest

from lola.client import EventProducer, SnapshotReader, click, conversion, decision_request, encode, impression, variant
from lola.errors import BrokerError, EventError
from lola.stream import events as ev


def test_builders_encode_what_the_worker_decodes():
    key, value = encode(variant("exp-1", "a", "A headline", settings={"policy": "ucb", "alpha": 1.0}))
    assert key == b"exp-1"
    obj = orjson.loads(value)
    assert obj["type"] == "variant" and obj["v"] == ev.SCHEMA_VERSION and obj["settings"]["policy"] == "ucb"
    for event in (decision_request("r1", "exp-1", user_id="u"), impression("exp-1", "a", ts=10.0),
                  click("exp-1", "a", ts=11.0, impression_id="i1"), conversion("exp-1", "a", 2.5, ts=12.0)):
        key, value = encode(event)
        assert ev.decode(value, key) == event


@pytest.mark.parametrize("event, reason", [
    (variant("", "a", "text"), "invalid_value"),
    (impression("exp-1", "a", ts=-1.0), "invalid_value"),
    (conversion("exp-1", "a", value=1e12, ts=1.0), "invalid_value"),
    (variant("exp-1", "a", "x" * (ev.MAX_TEXT_CHARS + 1)), "invalid_value"),
])
def test_an_event_the_worker_would_dead_letter_is_refused_before_sending(event, reason):
    with pytest.raises(EventError) as info:
        encode(event)
    assert info.value.reason == reason


def test_encode_refuses_what_is_not_an_event():
    with pytest.raises(TypeError):
        encode({"type": "variant"})  # type: ignore[arg-type]


@pytest.mark.broker
def test_producer_and_snapshot_reader_round_trip_through_a_worker(stream_settings, thread_worker):
    s = stream_settings(constant_prior=0.05)
    w = thread_worker(s)
    reports = []
    with EventProducer(settings=s, on_delivery=lambda err, e: reports.append((err, e))) as producer:
        for e in range(5):
            exp = f"exp-{e}"
            producer.send(variant(exp, "a", f"headline a {e}"))
            producer.send(variant(exp, "b", f"headline b {e}"))
            for i in range(e + 1):
                producer.send(impression(exp, "a", event_id=f"{exp}-imp-{i}"))
            producer.send(click(exp, "a", event_id=f"{exp}-clk"))
            producer.send(click(exp, "a", event_id=f"{exp}-clk"))  # a retried send: counted once
    assert producer.sent == producer.delivered == len(reports) == 5 * 4 + 15
    assert all(err is None for err, _ in reports)
    truth = {f"exp-{e}": {"a": {"impressions": e + 1, "clicks": 1, "conversions": 0},
                          "b": {"impressions": 0, "clicks": 0, "conversions": 0}} for e in range(5)}
    reader = SnapshotReader(settings=s, timeout_s=10)
    deadline = time.monotonic() + 60

    def settled() -> bool:
        # priors come from the provider thread, so a snapshot can carry the counts a moment before the prior
        exp = reader.experiment("exp-3")
        return reader.counts() == truth and exp is not None and exp["arms"]["a"]["prior"] is not None

    while not settled() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert reader.counts() == truth
    assert reader.experiment("exp-3")["arms"]["a"]["prior"] == pytest.approx(0.05)
    w.stop()


@pytest.mark.broker
def test_close_raises_when_events_stay_undelivered():
    # log.level via the pass-through: no "connection refused" lines from librdkafka
    producer = EventProducer(bootstrap="127.0.0.1:1", close_timeout_s=0.5, kafka_properties={"log_level": "2"})
    producer.send(variant("exp-1", "a", "headline"))
    with pytest.raises(BrokerError, match="1 event.s. undelivered"):
        producer.close()
    producer.close()  # a second close is a no-op
    del producer
    gc.collect()  # destroy the client now: no reconnect noise after the test
