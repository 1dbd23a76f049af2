"""The id ring (kernels/idring.py) against a slow twin: an OrderedDict FIFO with the same rules."""

from collections import OrderedDict

import numpy as np
import pytest

from lola.kernels import idring
from lola.kernels.idring import F_CLOCK, F_DROPPED, I_BUDGET_EVICTIONS, I_COUNT, I_SEQ


class Twin:
    """The ring's rules written plainly: insertion-ordered map, front eviction."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: OrderedDict = OrderedDict()  # hash -> ts
        self.seq = 0
        self.budget_evictions = 0
        self.clock = -np.inf
        self.dropped = -np.inf

    def pop_front(self, window_s: float, count_budget: bool) -> None:
        _, t = self.entries.popitem(last=False)
        if count_budget and t >= self.clock - window_s:
            self.budget_evictions += 1
        self.dropped = max(self.dropped, t)

    def insert(self, h: tuple, t: float, window_s: float, expire: bool) -> int:
        if h in self.entries:
            return -1
        self.clock = max(self.clock, t)
        if len(self.entries) == self.capacity:
            self.pop_front(window_s, True)
        self.entries[h] = t
        self.seq += 1
        while expire and self.entries and next(iter(self.entries.values())) < self.clock - window_s:
            self.pop_front(window_s, False)
        return self.seq - 1


def _ring(capacity):
    keys, ts, clicks, table, ints, floats = idring.allocate(capacity)
    return dict(keys=keys, ts=ts, clicks=clicks, table=table, ints=ints, floats=floats)


def _insert(r, hashes, tss, window_s, expire=True):
    numbers = np.empty(len(tss), dtype=np.int64)
    idring.ring_insert(r["table"], r["keys"], r["ts"], r["clicks"], r["ints"], r["floats"], window_s,
                       hashes, tss, expire, True, numbers)
    return numbers


def _lookup(r, hashes):
    out = np.empty(len(hashes), dtype=np.int64)
    idring.ring_lookup(r["table"], r["keys"], hashes, out)
    return out


def _compare(r, twin, universe):
    assert r["ints"][I_SEQ] == twin.seq and r["ints"][I_COUNT] == len(twin.entries)
    assert r["ints"][I_BUDGET_EVICTIONS] == twin.budget_evictions
    assert r["floats"][F_CLOCK] == twin.clock and r["floats"][F_DROPPED] == twin.dropped
    slots = _lookup(r, universe)
    for h, slot in zip(map(tuple, universe.tolist()), slots.tolist()):
        if h in twin.entries:
            assert slot >= 0 and r["ts"][slot] == twin.entries[h]
        else:
            assert slot == -1
    # the index holds exactly the kept entries: no lost or stale slots after backward shifts
    assert int((r["table"] >= 0).sum()) == len(twin.entries)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("capacity", [16, 37, 200])
def test_ring_matches_its_twin_on_seeded_streams(seed, capacity):
    rng = np.random.default_rng(seed)
    # few distinct first words: long probe runs that wrap, so deletions shift entries across them
    universe = np.stack([rng.integers(0, 64, 4 * capacity, dtype=np.uint64) * np.uint64(1 + seed),
                         np.arange(4 * capacity, dtype=np.uint64)], axis=1)
    r, twin = _ring(capacity), Twin(capacity)
    window_s = float(rng.choice([5.0, 50.0, 1e9]))
    t = 0.0
    for _ in range(60):
        n = int(rng.integers(1, 2 * capacity))
        pick = universe[rng.integers(0, len(universe), n)]
        t += float(rng.exponential(2.0))
        tss = t + rng.normal(0.0, 3.0, n)  # out-of-order event times within a batch
        numbers = _insert(r, pick, tss, window_s)
        want = [twin.insert(tuple(h), float(x), window_s, True) for h, x in zip(pick.tolist(), tss.tolist())]
        assert numbers.tolist() == want
        _compare(r, twin, universe)


def test_a_full_ring_evicts_its_front_and_counts_it_only_inside_the_window():
    r = _ring(16)
    hashes = np.stack([np.arange(20, dtype=np.uint64), np.ones(20, dtype=np.uint64)], axis=1)
    _insert(r, hashes[:16], np.arange(16.0), window_s=100.0)
    _insert(r, hashes[16:18], np.array([16.0, 17.0]), window_s=100.0)
    assert r["ints"][I_BUDGET_EVICTIONS] == 2 and r["floats"][F_DROPPED] == 1.0
    assert _lookup(r, hashes[:3]).tolist()[:2] == [-1, -1] and _lookup(r, hashes[2:3])[0] >= 0
    _insert(r, hashes[18:19], np.array([500.0]), window_s=100.0)  # every older entry leaves the window
    assert r["ints"][I_COUNT] == 1 and r["ints"][I_BUDGET_EVICTIONS] == 2 and r["floats"][F_DROPPED] == 17.0


def test_allocation_touches_every_page_and_fits_the_table_bound():
    keys, ts, clicks, table, ints, floats = idring.allocate(1000)
    assert table.shape[0] == 2048 and (table == -1).all() and not keys.any()
    assert keys.nbytes + ts.nbytes + clicks.nbytes + table.nbytes <= 1000 * idring.MAX_BYTES_PER_ENTRY
