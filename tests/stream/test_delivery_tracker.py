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
