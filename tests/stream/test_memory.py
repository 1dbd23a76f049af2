"""stream/memory.py: the mmap threshold and the heap trim after many evictions (glibc only), and
the loops that must not keep their last batch alive while they wait."""

import gc
import os
import time

import pytest

from lola.stream import memory
from lola.stream.priors import ConstantPriorProvider, PriorService
from lola.stream.shard import PriorRequest


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


def test_the_prior_thread_keeps_no_request_once_it_is_answered():
    # As locals of the thread's loop, the last batch's requests (ids and texts of experiments
    # perhaps evicted since) lived until the next request came, pinning their heap pages.
    svc = PriorService(ConstantPriorProvider(0.05), timeout_s=5).start()

    def alive() -> list:
        return [o for o in gc.get_objects() if type(o) is PriorRequest and o.experiment_id == "answered"]

    try:
        for v in "ab":
            svc.submit(PriorRequest(0, "answered", v, f"text {v}"))
        got, deadline = [], time.monotonic() + 5
        while (len(got) < 2 or alive()) and time.monotonic() < deadline:
            got += svc.results()
            time.sleep(0.01)
        assert [(r.variant_id, r.prior) for r in got] == [("a", 0.05), ("b", 0.05)]
        assert alive() == []
    finally:
        svc.stop()


def test_the_worker_runs_itself_again_with_glibc_malloc_only_when_the_variable_is_unset(monkeypatch):
    if memory._glibc() is None:
        pytest.skip("not glibc: pymalloc stays")
    calls = []
    monkeypatch.setattr(memory.os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    monkeypatch.setattr(memory.sys, "orig_argv", ["/venv/bin/python", "/venv/bin/lola", "worker", "--group", "g"])
    monkeypatch.setenv("PYTHONMALLOC", "pymalloc")
    memory.reexec_with_glibc_malloc()
    assert calls == []  # the user's choice, whatever it is
    monkeypatch.delenv("PYTHONMALLOC")
    memory.reexec_with_glibc_malloc()
    # the same command line, so `ps` and `pkill -f "lola worker"` still find it
    [(path, argv, env)] = calls
    assert path == memory.sys.executable and argv == ["/venv/bin/python", "/venv/bin/lola", "worker", "--group", "g"]
    assert env["PYTHONMALLOC"] == "malloc" and env["PATH"] == os.environ["PATH"]
