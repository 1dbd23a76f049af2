"""Process memory of the worker: give large freed buffers back to the operating system.

glibc serves a ``malloc`` of at least its *mmap threshold* with a fresh mapping that
``free`` unmaps, and smaller ones from its heap. The threshold is dynamic: after a mapped
block is freed it rises to that block's size (up to 32 MiB), so from then on buffers the
size of a checkpoint record (serialised base, compressed delta, JSON header) come from the
heap, and the pages they used stay resident after they are freed. A worker's RSS then keeps
the high-water mark of every transient serialisation, which reads as growth. Setting the
threshold explicitly fixes it (and turns off the dynamic adjustment, of the trim threshold
too), so every buffer at or above it is unmapped when freed.

Why by hand: this is one ``mallopt`` call; no maintained package wraps it. Other C
libraries (musl, macOS) have no ``libc.so.6`` and are left as they are.
"""

from __future__ import annotations

import ctypes

#: mallopt parameter number of M_MMAP_THRESHOLD (glibc's malloc.h).
M_MMAP_THRESHOLD = -3


def pin_mmap_threshold(nbytes: int) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` (0: leave the dynamic default). True if set."""
    if nbytes <= 0:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(nbytes)))
