"""Process memory of the worker: give large freed buffers back to the operating system.

glibc serves a ``malloc`` of at least its *mmap threshold* with a fresh mapping that
``free`` unmaps, and smaller ones from its heap. The threshold is dynamic: after a mapped
block is freed it rises to that block's size (up to 32 MiB), so from then on buffers the
size of a checkpoint record (serialised base, compressed delta, JSON header) come from the
heap, and the pages they used stay resident after they are freed. A worker's RSS then keeps
the high-water mark of every transient serialisation, which reads as growth. Setting the
threshold explicitly fixes it (and turns off the dynamic adjustment, of the trim threshold
too), so every buffer at or above it is unmapped when freed.

Evicting many experiments frees their rows, registry entries and texts, but objects in
reference cycles wait for a full garbage collection, and freed pages in the middle of the
heap stay resident (fragmentation): :class:`HeapTrimmer` runs a full collection, then
``malloc_trim(0)``, which gives every free page back, after a worker has evicted
:data:`TRIM_AFTER_EVICTIONS` experiments (and once more an interval later, for what the
wave's aftermath freed), at most every :data:`TRIM_MIN_INTERVAL_S` (both
walk the heap: tens to hundreds of milliseconds on the loop).

CPython's own small-object allocator (pymalloc) keeps 1 MiB arenas that are returned only
when wholly empty, so a few objects that outlive an eviction wave keep many of them (1.6x the
baseline RSS after 100k archived experiments, against 1.02x with glibc's allocator;
docs/operations/limits.md). ``PYTHONMALLOC=malloc`` makes every object a glibc allocation,
but it is read when the interpreter starts: :func:`reexec_with_glibc_malloc` has ``lola
worker`` run itself again with it when the variable is unset.

Why by hand: these are two libc calls (``mallopt``, ``malloc_trim``); no maintained
package wraps them. Other C libraries (musl, macOS) have no ``libc.so.6`` and are left as
they are.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import time

#: mallopt parameter number of M_MMAP_THRESHOLD (glibc's malloc.h).
M_MMAP_THRESHOLD = -3
#: Experiments evicted since the last trim before the next one.
TRIM_AFTER_EVICTIONS = 1000
#: Seconds between two trims at least.
TRIM_MIN_INTERVAL_S = 10.0


def _glibc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None


def pin_mmap_threshold(nbytes: int) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` (0: leave the dynamic default). True if set."""
    libc = _glibc() if nbytes > 0 else None
    return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, int(nbytes)))


def reexec_with_glibc_malloc() -> None:
    """Replace this process by the same command line (``sys.orig_argv``: same pid, arguments,
    interpreter options and environment, so ``ps`` and ``pkill -f`` see what they saw) with
    ``PYTHONMALLOC=malloc``, unless ``PYTHONMALLOC`` is set (any value is the user's choice,
    ``pymalloc`` included) or the C library is not glibc. Returns only when it did not
    replace the process."""
    if "PYTHONMALLOC" in os.environ or _glibc() is None:
        return
    env = {**os.environ, "PYTHONMALLOC": "malloc"}
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:  # no exec (a frozen or odd interpreter): run on with the default allocator
        return


class HeapTrimmer:
    """Gives free heap pages back after many evictions (see the module docstring): the loop
    reports evictions and calls :meth:`tick` every second."""

    def __init__(self) -> None:
        self.libc = _glibc()
        self.pending = 0
        self.last = -TRIM_MIN_INTERVAL_S
        self.trims = 0
        # one more trim an interval after a wave's: what the wave's aftermath freed (the
        # rebuilt registry's old tables, the shrunk shard's old restore-point base, replaced at
        # its next checkpoint) is given back too. Without it, 1 of 3 runs of the 100k lifecycle
        # bench ended at 1.154x the baseline RSS instead of 1.017-1.018x (all partitions had
        # evicted before the wave's one trim)
        self.follow_up = False

    def evicted_experiments(self, n: int) -> None:
        self.pending += n

    def tick(self) -> bool:
        """Trim if :data:`TRIM_AFTER_EVICTIONS` evictions are pending (or the last trim was
        such a wave's: once more) and the last trim is :data:`TRIM_MIN_INTERVAL_S` old; True if it trimmed."""
        now = time.monotonic()
        wave = self.pending >= TRIM_AFTER_EVICTIONS
        if self.libc is None or not (wave or self.follow_up) or now - self.last < TRIM_MIN_INTERVAL_S:
            return False
        gc.collect()  # evicted objects in reference cycles wait for a full collection otherwise
        self.libc.malloc_trim(0)
        self.pending, self.last, self.follow_up = 0, now, wave
        self.trims += 1
        return True
