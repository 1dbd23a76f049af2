"""The crash-loop breaker's bookkeeping (pure): deaths per offset, chunking, markers."""

from __future__ import annotations

from lola.stream.breaker import PartitionBreaker


def recs(first, last):
    return [(o, b"k", b"v%d" % o) for o in range(first, last + 1)]


def restart(breaker, first, last, next_offset=0):
    """The process died with first..last in flight: what the next owner reads."""
    return PartitionBreaker(0, breaker.threshold, breaker.marker(first, last, "w"), next_offset)


def test_a_record_that_kills_the_process_is_poison_after_n_deaths_and_its_neighbours_are_not():
    b = PartitionBreaker(0, 3)
    assert [len(c) for c, _ in b.chunks(recs(0, 9), [0.0] * 10)] == [10]  # no suspects: one chunk
    b = restart(b, 0, 9)                        # death 1: the whole batch was in flight
    chunks = [c for c, _ in b.chunks(recs(0, 12), [0.0] * 13)]
    assert [len(c) for c in chunks] == [1] * 10 + [3]  # the suspect range one by one, the rest together
    assert b.poison_deaths(4) is None
    b = restart(b, 4, 4)                        # death 2: record 4 alone
    assert b.poison_deaths(4) is None and b.suspects[0].deaths_of(4) == 2 and b.suspects[0].deaths_of(5) == 1
    b = restart(b, 4, 4)                        # death 3
    assert b.poison_deaths(4) == 3
    assert all(b.poison_deaths(o) is None for o in (0, 3, 5, 9))
    b.passed(10)                                # applied past the range: forgotten
    assert b.suspects == []


def test_a_clean_marker_or_a_passed_range_charges_nothing():
    b = PartitionBreaker(0, 3)
    clean = PartitionBreaker(0, 3, b.marker(None, None, "w"))
    assert clean.died_in_flight is None and clean.suspects == []
    passed = restart(b, 0, 9, next_offset=10)   # the checkpoint already covers the range
    assert passed.died_in_flight == (0, 9) and passed.suspects == []


def test_an_unreadable_marker_protects_nothing_and_stops_nothing():
    for junk in (b"not json", b"[1,2]", b'{"inflight": "x", "suspects": 5}'):
        b = PartitionBreaker(0, 3, junk)
        assert b.suspects == [] and [len(c) for c, _ in b.chunks(recs(0, 3), [0.0] * 4)] == [4]


def test_single_record_batches_still_reach_the_threshold():
    b = PartitionBreaker(0, 2)
    b = restart(b, 7, 7)
    assert b.poison_deaths(7) is None
    b = restart(b, 7, 7)
    assert b.poison_deaths(7) == 2
