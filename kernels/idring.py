"""A FIFO ring of 128-bit ids with an open-addressing index, in preallocated arrays (@njit).

The de-duplication window (:class:`lola.stream.dedup.DedupWindow`) keeps, per
partition-shard, the ids of counted events for a window of event time. Python dicts of
strings grow while that window fills (minutes at production rates) and cost ~200 bytes
an entry; these arrays are allocated once at their final size, so a worker's memory is
flat from its first event and the byte budget is exact, not an estimate.

Layout (``C`` entries, ``T`` a power of two >= 2C):

* ``keys`` uint64[C, 2]: an entry's 128-bit hash; ``ts`` float64[C]: its event time;
  ``clicks`` int32[C]: clicks attributed to it (the per-impression cap).
* Entries are numbered in arrival order; entry number ``n`` lives in slot ``n % C`` and
  the kept entries are numbers ``seq - count`` .. ``seq - 1`` (``ints = [seq, count,
  budget_evictions]``, ``floats = [clock, dropped_ts]``).
* ``table`` int32[T]: slots by linear probing on the hash's first word, -1 for empty;
  removal shifts later entries of the probe run back (no tombstones, so lookups never slow
  down as entries come and go).

Eviction (the front, oldest first): when the ring is full before an insert (the budget
binds; counted in ``budget_evictions`` if the entry was still inside the time window), and
after each insert while the front is older than ``clock - window_s``. ``dropped_ts`` is the
newest event time ever evicted (the stream's "stale" horizon).
"""

from __future__ import annotations

import numba
import numpy as np

from lola.kernels.numba_config import NJIT

#: ints / floats fields.
I_SEQ, I_COUNT, I_BUDGET_EVICTIONS = 0, 1, 2
F_CLOCK, F_DROPPED = 0, 1

#: Bytes of one entry in the ring (two uint64, a float64, an int32); the index adds 4 bytes
#: per table slot, and the table has between 2 and 4 slots per entry.
RING_ENTRY_BYTES = 28
MAX_BYTES_PER_ENTRY = RING_ENTRY_BYTES + 4 * 4


def table_size(capacity: int) -> int:
    """The index's slots for ``capacity`` entries: the power of two >= 2 * capacity (load <= 1/2)."""
    return 1 << max(4, (2 * capacity - 1).bit_length())


def allocate(capacity: int) -> tuple[np.ndarray, ...]:
    """``(keys, ts, clicks, table, ints, floats)`` for ``capacity`` entries, every page touched
    (``np.zeros`` would map pages lazily and the memory would appear as the ring fills)."""
    keys = np.empty((capacity, 2), dtype=np.uint64)
    keys.fill(0)
    ts = np.empty(capacity, dtype=np.float64)
    ts.fill(0.0)
    clicks = np.empty(capacity, dtype=np.int32)
    clicks.fill(0)
    table = np.empty(table_size(capacity), dtype=np.int32)
    table.fill(-1)
    ints = np.zeros(3, dtype=np.int64)
    floats = np.array([-np.inf, -np.inf])
    return keys, ts, clicks, table, ints, floats


@numba.njit(**NJIT)
def ring_find(table, keys, h0, h1):
    """The slot holding hash ``(h0, h1)``, or -1."""
    mask = table.shape[0] - 1
    i = h0 & mask
    while True:
        s = table[i]
        if s < 0:
            return -1
        if keys[s, 0] == h0 and keys[s, 1] == h1:
            return s
        i = (i + 1) & mask


@numba.njit(**NJIT)
def ring_lookup(table, keys, hashes, out):
    """``out[j]`` = the slot of ``hashes[j]`` or -1 (one call for a batch)."""
    for j in range(hashes.shape[0]):
        out[j] = ring_find(table, keys, hashes[j, 0], hashes[j, 1])


@numba.njit(**NJIT)
def _table_remove(table, keys, slot):
    mask = table.shape[0] - 1
    i = keys[slot, 0] & mask
    while table[i] != slot:
        i = (i + 1) & mask
    j = i
    while True:  # backward shift: move up any later entry of the run whose home is not in (i, j]
        j = (j + 1) & mask
        s = table[j]
        if s < 0:
            break
        home = keys[s, 0] & mask
        if ((j - home) & mask) >= ((j - i) & mask):
            table[i] = s
            i = j
    table[i] = -1


@numba.njit(**NJIT)
def ring_pop_front(table, keys, ts, clicks, ints, floats, window_s, count_budget):
    """Evict the oldest entry (the ring must not be empty)."""
    C = ts.shape[0]
    slot = (ints[I_SEQ] - ints[I_COUNT]) % C
    _table_remove(table, keys, slot)
    t = ts[slot]
    if count_budget and t >= floats[F_CLOCK] - window_s:
        ints[I_BUDGET_EVICTIONS] += 1
    if t > floats[F_DROPPED]:
        floats[F_DROPPED] = t
    clicks[slot] = 0
    ints[I_COUNT] -= 1


@numba.njit(**NJIT)
def ring_drop_front(table, keys, ts, clicks, ints, floats, n):
    """Evict the ``n`` oldest entries (at most all), uncounted (a restore following its writer)."""
    for _ in range(min(n, ints[I_COUNT])):
        ring_pop_front(table, keys, ts, clicks, ints, floats, 0.0, False)


@numba.njit(**NJIT)
def ring_expire(table, keys, ts, clicks, ints, floats, window_s):
    """Evict from the front while it is older than ``clock - window_s``."""
    C = ts.shape[0]
    oldest_kept = floats[F_CLOCK] - window_s
    while ints[I_COUNT] > 0 and ts[(ints[I_SEQ] - ints[I_COUNT]) % C] < oldest_kept:
        ring_pop_front(table, keys, ts, clicks, ints, floats, window_s, False)


@numba.njit(**NJIT)
def ring_insert(table, keys, ts, clicks, ints, floats, window_s, hashes, tss, expire, count_budget, numbers):
    """Append ``hashes[j]`` with event time ``tss[j]`` in order; ``numbers[j]`` = its entry
    number, or -1 if it was already kept (then nothing changes). A full ring evicts its front
    first; with ``expire`` the entries older than the window go after each append."""
    C = ts.shape[0]
    mask = table.shape[0] - 1
    for j in range(hashes.shape[0]):
        h0 = hashes[j, 0]
        h1 = hashes[j, 1]
        if ring_find(table, keys, h0, h1) >= 0:
            numbers[j] = -1
            continue
        if tss[j] > floats[F_CLOCK]:
            floats[F_CLOCK] = tss[j]
        if ints[I_COUNT] == C:  # counted only if the entry was still inside the (new) window
            ring_pop_front(table, keys, ts, clicks, ints, floats, window_s, count_budget)
        n = ints[I_SEQ]
        slot = n % C
        keys[slot, 0] = h0
        keys[slot, 1] = h1
        ts[slot] = tss[j]
        clicks[slot] = 0
        i = h0 & mask
        while table[i] >= 0:
            i = (i + 1) & mask
        table[i] = slot
        ints[I_SEQ] = n + 1
        ints[I_COUNT] += 1
        numbers[j] = n
        if expire:
            ring_expire(table, keys, ts, clicks, ints, floats, window_s)
