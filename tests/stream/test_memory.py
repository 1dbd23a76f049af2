"""stream/memory.py: the mmap threshold and the heap trim after many evictions (glibc only)."""

import pytest

from lola.stream import memory


def test_the_threshold_is_set_on_glibc_and_zero_leaves_the_default():
    assert memory.pin_mmap_threshold(0) is False
    assert memory.pin_mmap_threshold(1 << 20) is (memory._glibc() is not None)


def test_the_heap_is_trimmed_after_enough_evictions_and_not_more_often_than_the_interval(monkeypatch):
    trimmer = memory.HeapTrimmer()
    if trimmer.libc is None:
        pytest.skip("not glibc: nothing to trim")
    calls = []
    trimmer.libc = type("Libc", (), {"malloc_trim": staticmethod(lambda pad: calls.append(pad) or 1)})()
    clock = iter([100.0, 101.0, 102.0, 115.0, 126.0, 140.0])
    monkeypatch.setattr(memory.time, "monotonic", lambda: next(clock))
    trimmer.evicted_experiments(memory.TRIM_AFTER_EVICTIONS - 1)
    assert not trimmer.tick()                                  # not enough evictions yet
    trimmer.evicted_experiments(1)
    assert trimmer.tick() and calls == [0]
    trimmer.evicted_experiments(memory.TRIM_AFTER_EVICTIONS)
    assert not trimmer.tick()                                  # 1 s after the last trim: too soon
    assert trimmer.tick() and trimmer.trims == 2               # 13 s after it
    assert trimmer.tick() and trimmer.trims == 3               # the wave's follow-up, without evictions
    assert not trimmer.tick()                                  # and only one


def test_the_restore_ring_is_reserved_once_and_every_restore_point_reuses_it():
    from lola.stream.processor import ShardProcessor

    proc = ShardProcessor(0)
    assert proc._restore_seen is None  # a bare processor (tests, replays) allocates it at its first mark
    proc.reserve_restore_ring()  # the worker, at assignment
    ring = proc._restore_seen
    assert ring is not None and ring.capacity == proc.seen.capacity
    proc.mark()
    proc.mark()
    proc.reserve_restore_ring()
    assert proc._restore_seen is ring
