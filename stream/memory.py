"""Process memory of the worker: give large freed buffers back to the operating system.

glibc serves a ``malloc`` of at least its *mmap threshold* with a fresh mapping that
``free`` unmaps, and smaller ones from its heap. The threshold is dynamic: after a mapped
block is freed it rises to that block's size (up to 32 MiB), so from then on buffers the
size of a checkpoint record (serialised base, compressed delta, JSON header) come from the
heap, and the pages they used stay resident after they are freed. A worker's RSS then keeps
the high-water mark of every transient serialisation, which reads as growth. Setting the
threshold explicitly fixes it (and turns off the dynamic adjustment, of the trim threshold
too), so every buffer at or above it is unmapped when freed.

Evicting many experiments frees their rows, registry entries and texts, but freed heap
pages in the middle of the heap stay resident (fragmentation): :class:`HeapTrimmer` calls
``malloc_trim(0)``, which gives every free page back, after a worker has evicted
:data:`TRIM_AFTER_EVICTIONS` experiments, at most every :data:`TRIM_MIN_INTERVAL_S` (a trim
walks the heap: milliseconds to tens of milliseconds on the loop).

Why by hand: these are two libc calls (``mallopt``, ``malloc_trim``); no maintained
package wraps them. Other C libraries (musl, macOS) have no ``libc.so.6`` and are left as
they are.
"""

from __future__ import annotations

import ctypes
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


class HeapTrimmer:
    """Gives free heap pages back after many evictions (see the module docstring)."""

    def __init__(self) -> None:
        self.libc = _glibc()
        self.evicted = 0
        self.last = -TRIM_MIN_INTERVAL_S
        self.trims = 0

    def evicted_experiments(self, n: int) -> bool:
        """Count ``n`` evictions; True if this call trimmed the heap."""
        self.evicted += n
        now = time.monotonic()
        if self.libc is None or self.evicted < TRIM_AFTER_EVICTIONS or now - self.last < TRIM_MIN_INTERVAL_S:
            return False
        self.libc.malloc_trim(0)
        self.evicted, self.last = 0, now
        self.trims += 1
        return True
