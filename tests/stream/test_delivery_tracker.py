"""DeliveryTracker: a checkpoint barrier that waits for exactly the outputs before it (pure)."""

import pytest

from lola.stream.kafka import DeliveryTracker


def test_barrier_waits_for_earlier_outputs_only_even_out_of_order():
    t = DeliveryTracker()
    early = [t.track() for _ in range(3)]
    t.barrier()
    late = [t.track() for _ in range(2)]
    assert not t.cleared()
    late[0](None, None)          # reported before the earlier ones (another partition)
    late[1](None, None)
    early[2](None, None)
    early[0](None, None)
    assert not t.cleared()       # a plain count (4 of 5 delivered) would already say yes
    early[1](None, None)
    assert t.cleared()
    assert t.outstanding == 0


def test_barrier_with_nothing_in_flight_is_clear_and_errors_count_as_reported():
    t = DeliveryTracker()
    t.barrier()
    assert t.cleared()
    seen = []
    cb = t.track(lambda err, msg: seen.append(err))
    t.barrier()
    assert not t.cleared()
    cb("MSG_TIMED_OUT", None)    # a failed delivery is final too: it is reported, not pending
    assert t.cleared() and seen == ["MSG_TIMED_OUT"]


def test_release_forgets_the_barrier():
    t = DeliveryTracker()
    t.track()
    t.barrier()
    assert not t.cleared()
    t.release()
    assert t.cleared()


class _RefusingProducer:
    def produce(self, *a, **kw):
        raise RuntimeError("local error")


def test_a_produce_that_raises_is_not_awaited_forever():
    t = DeliveryTracker()
    with pytest.raises(RuntimeError):
        t.produce(_RefusingProducer(), "topic", b"x")
    t.barrier()
    assert t.cleared()
    assert t.outstanding == 0


class _Msg:
    def __init__(self, topic, value, key):
        self._t, self._v, self._k = topic, value, key

    def topic(self):
        return self._t

    def value(self):
        return self._v

    def key(self):
        return self._k

    def headers(self):
        return [("h", b"1")]


class _RecordingProducer:
    def __init__(self):
        self.sent = []

    def produce(self, topic, value, key, **kw):
        self.sent.append((topic, value, key, kw.get("headers"), kw["on_delivery"]))


def test_a_failed_delivery_is_not_acknowledged_it_fails_the_barrier_and_is_produced_again():
    """Issue 15: the tracker used to ignore the delivery error (a checkpoint then moved past it)."""
    t = DeliveryTracker()
    p = _RecordingProducer()
    t.produce(p, "decisions", b"d1", key=b"k")
    t.produce(p, "decisions", b"d2", key=b"k")
    t.barrier()
    p.sent[0][4](None, _Msg("decisions", b"d1", b"k"))
    p.sent[1][4]("MSG_TIMED_OUT", _Msg("decisions", b"d2", b"k"))
    assert t.cleared() and t.barrier_failed and t.failed == 1
    assert t.retry_failed(p) == 1 and t.retry == []
    assert p.sent[2][:4] == ("decisions", b"d2", b"k", [("h", b"1")])
    t.release()
    t.barrier()                    # the next checkpoint waits for the retried output
    assert not t.cleared()
    p.sent[2][4](None, _Msg("decisions", b"d2", b"k"))
    assert t.cleared() and not t.barrier_failed
