"""De-duplication by event time within a byte budget (one per partition-shard).

Keyed by (experiment, event type, event id): the same id in two experiments, or an
impression and a click sharing an id, are different events. An entry is kept while its
``ts`` is within ``window_s`` of the newest accepted event time of the partition
(:attr:`clock`); when the ring holding the entries is full the oldest are dropped early
(the window *shrinks*; :attr:`budget_evictions` counts them).

The guarantee is "never counted twice", never "maybe": an event whose ``ts`` is not
newer than :attr:`horizon` (the newest ``ts`` ever dropped, or ``clock - window_s``)
cannot be checked against what was dropped, so the processor dead-letters it
(``stale``) instead of counting it. A re-sent event carries its original ``ts``, so a
duplicate is either still remembered (dropped as a duplicate) or at/below the horizon
(dead-lettered ``stale``).

Memory: the entries live in preallocated arrays (:mod:`lola.kernels.idring`), allocated
at their full size when the shard starts, at most 45 bytes an entry (with the ``touched``
flag); a shard holds two such rings (its window and the restore point's copy), and
``budget_bytes`` pays for both, exactly and from the first event, so a worker's memory
does not grow as the window fills. An entry holds the 128-bit BLAKE2b
hash of its key (:func:`event_hashes`), not the key: a collision needs ~2^64 ids, so a
hostile producer cannot make a valid event look like a duplicate.

Batches: :meth:`batch` looks every key of a consumed batch up in one kernel call; the
returned :class:`BatchView` answers the processor's questions during the batch (its own
puts included) and :meth:`commit` appends the batch's new entries in order. Eviction
during a batch happens at commit, so a key present when the batch began is a duplicate
for the whole batch (it was seen) and the horizon moves at batch ends.
"""

from __future__ import annotations

import base64
import hashlib
import math
from typing import Iterable

import numpy as np

from lola.errors import LolaError
from lola.kernels import idring
from lola.kernels.idring import F_CLOCK, F_DROPPED, I_BUDGET_EVICTIONS, I_COUNT, I_SEQ

#: One character per counted event type keeps keys short.
_KIND_CODE = {"impression": "i", "click": "c", "conversion": "v"}

#: The smallest ring, whatever the budget.
MIN_CAPACITY = 16


def dedup_key(experiment_id: str, kind: str, event_id: str) -> str:
    """The window's key of an event: type code, experiment and id, separated by a unit separator."""
    return f"{_KIND_CODE[kind]}\x1f{experiment_id}\x1f{event_id}"


def event_hashes(keys: Iterable[str]) -> np.ndarray:
    """uint64[n, 2]: the 128-bit BLAKE2b digest of each key's UTF-8 bytes (the one hash of
    de-duplication keys; stable across processes and versions, as checkpoints need)."""
    blake = hashlib.blake2b
    raw = b"".join(blake(k.encode(), digest_size=16).digest() for k in keys)
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64, copy=False).reshape(-1, 2)


#: A shard holds two rings of one capacity: its window and the restore point's copy
#: (lola.stream.shard_checkpoint); the budget pays for both.
RINGS_PER_SHARD = 2


def capacity_for(budget_bytes: int) -> int:
    """Entries per ring when a shard's two rings (ring plus index each) fit ``budget_bytes``."""
    per_ring = int(budget_bytes) // RINGS_PER_SHARD
    entry = idring.RING_ENTRY_BYTES + 1  # and the touched flag
    cap = max(MIN_CAPACITY, per_ring // (entry + 16))  # the index: at most 4 slots of 4 bytes an entry
    while cap > MIN_CAPACITY and cap * entry + 4 * idring.table_size(cap) > per_ring:
        cap -= 1
    return cap


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()


def _unb64(s: str, dtype: str, width: int = 0) -> np.ndarray:
    a = np.frombuffer(base64.b64decode(s), dtype=dtype)
    return a.reshape(-1, width) if width else a


class BatchView:
    """The window as one batch sees it: the entries kept when it began, plus its own puts.

    The processor's hot loop reads :attr:`present` and :attr:`fresh` and moves :attr:`clock`
    itself (dict operations, no method calls per event); the methods are the same rules."""

    __slots__ = ("window", "index", "hashes", "present", "fresh", "fresh_clicks", "old_clicks", "clock",
                 "dropped_ts", "window_s")

    def __init__(self, window: "DedupWindow", keys: list[str]) -> None:
        self.window = window
        self.index = {k: i for i, k in enumerate(dict.fromkeys(keys))}  # key -> its row in hashes
        self.hashes = event_hashes(self.index)
        slots = np.empty(len(self.index), dtype=np.int64)
        if len(self.index):
            idring.ring_lookup(window.table, window.keys, self.hashes, slots)
        # key -> slot, for the keys kept when the batch began
        self.present = {k: s for k, s in zip(self.index, slots.tolist()) if s >= 0}
        self.fresh: dict[str, float] = {}       # keys put during the batch, in order
        self.fresh_clicks: dict[str, int] = {}  # clicks added to fresh keys
        self.old_clicks: dict[str, int] = {}    # clicks added to kept keys
        self.clock = window.clock               # moves with the batch's puts, as the window's will
        self.dropped_ts = window.dropped_ts     # moves at commit only
        self.window_s = window.window_s

    def __contains__(self, key: str) -> bool:
        return key in self.present or key in self.fresh

    def get(self, key: str) -> float | None:
        slot = self.present.get(key)
        if slot is not None:
            return float(self.window.ts[slot])
        return self.fresh.get(key)

    def clicks(self, key: str) -> int:
        slot = self.present.get(key)
        if slot is not None:
            return int(self.window.clicks[slot]) + self.old_clicks.get(key, 0)
        return self.fresh_clicks.get(key, 0)

    def add_click(self, key: str) -> None:
        """One more click attributed to the impression ``key`` (which is in this view)."""
        if key in self.present:
            self.old_clicks[key] = self.old_clicks.get(key, 0) + 1
        else:
            self.fresh_clicks[key] = self.fresh_clicks.get(key, 0) + 1

    def put(self, key: str, ts: float) -> None:
        """Remember ``key`` (one the batch was opened with, not yet in this view)."""
        if key not in self:
            self.fresh[key] = ts
            if ts > self.clock:
                self.clock = ts

    @property
    def horizon(self) -> float:
        """The window's horizon with this batch's event times (budget drops move it at commit)."""
        return max(self.dropped_ts, self.clock - self.window_s)


class DedupWindow:
    """(experiment, type, id) -> ts, for ``window_s`` of event time, in ``budget_bytes``."""

    __slots__ = ("window_s", "budget_bytes", "capacity", "keys", "ts", "clicks", "table", "ints", "floats",
                 "touched")

    def __init__(self, window_s: float, budget_bytes: int) -> None:
        self.window_s = float(window_s)
        self.budget_bytes = int(budget_bytes)
        self.capacity = capacity_for(budget_bytes)
        self.keys, self.ts, self.clicks, self.table, self.ints, self.floats = idring.allocate(self.capacity)
        # Incremental checkpoints (lola.stream.delta): per slot, whether its click count changed
        # since the tracker cleared the flags (a reused slot may keep a stale flag: it then
        # sends its current count once more, harmless). Preallocated like the ring.
        self.touched = np.empty(self.capacity, dtype=np.bool_)
        self.touched.fill(False)

    def clear_touched(self) -> None:
        self.touched.fill(False)

    def copy_from(self, other: "DedupWindow") -> None:
        """Become ``other`` (same capacity), copying into this window's own arrays."""
        if other.capacity != self.capacity:
            raise LolaError(f"de-duplication window of {other.capacity} entries copied into one of {self.capacity}")
        self.window_s = other.window_s
        for name in ("keys", "ts", "clicks", "table", "ints", "floats", "touched"):
            np.copyto(getattr(self, name), getattr(other, name))

    def copy(self) -> "DedupWindow":
        w = DedupWindow(self.window_s, self.budget_bytes)
        w.copy_from(self)
        return w

    # ------------------------------------------------------------------ counters
    @property
    def seq(self) -> int:
        """Entries ever appended (the oldest kept entry is number ``seq - len(self)``)."""
        return int(self.ints[I_SEQ])

    @property
    def front(self) -> int:
        return int(self.ints[I_SEQ] - self.ints[I_COUNT])

    def __len__(self) -> int:
        return int(self.ints[I_COUNT])

    @property
    def budget_evictions(self) -> int:
        return int(self.ints[I_BUDGET_EVICTIONS])

    @property
    def clock(self) -> float:
        return float(self.floats[F_CLOCK])

    @property
    def dropped_ts(self) -> float:
        return float(self.floats[F_DROPPED])

    @property
    def nbytes(self) -> int:
        """Bytes the window's arrays hold (allocated in full at construction)."""
        return sum(a.nbytes for a in (self.keys, self.ts, self.clicks, self.table, self.ints, self.floats,
                                      self.touched))

    @property
    def horizon(self) -> float:
        """Events with ``ts <= horizon`` cannot be checked (they are dead-lettered ``stale``)."""
        return max(self.dropped_ts, self.clock - self.window_s)

    # ------------------------------------------------------------------ batches
    def batch(self, keys: list[str]) -> BatchView:
        """A view for one batch whose events will ask about ``keys`` and put only those (one
        hash each, one kernel lookup for all)."""
        return BatchView(self, keys)

    def commit(self, view: BatchView) -> None:
        """Apply a batch's clicks and append its new entries in order, then evict."""
        for key, n in view.old_clicks.items():  # before the appends, while the slots are the batch's
            slot = view.present[key]
            self.clicks[slot] += n
            self.touched[slot] = True
        if view.fresh:
            index = view.index
            rows = np.fromiter((index[k] for k in view.fresh), np.int64, len(view.fresh))
            numbers = self._append(view.hashes[rows], np.fromiter(view.fresh.values(), np.float64,
                                                                  len(view.fresh)), True, True)
            if view.fresh_clicks:
                front = self.front
                for key, number in zip(view.fresh, numbers.tolist()):
                    n = view.fresh_clicks.get(key)
                    if n and number >= front:
                        self.clicks[number % self.capacity] += n
                        self.touched[number % self.capacity] = True

    # ------------------------------------------------------------------ single keys (tests, tools)
    def __contains__(self, key: str) -> bool:
        h = event_hashes([key])
        return idring.ring_find(self.table, self.keys, h[0, 0], h[0, 1]) >= 0

    def get(self, key: str) -> float | None:
        h = event_hashes([key])
        slot = idring.ring_find(self.table, self.keys, h[0, 0], h[0, 1])
        return None if slot < 0 else float(self.ts[slot])

    def put(self, key: str, ts: float) -> None:
        view = BatchView(self, [key])
        view.put(key, ts)
        self.commit(view)

    # ------------------------------------------------------------------ internals
    def _append(self, hashes: np.ndarray, tss: np.ndarray, expire: bool, count_budget: bool) -> np.ndarray:
        numbers = np.empty(len(tss), dtype=np.int64)
        idring.ring_insert(self.table, self.keys, self.ts, self.clicks, self.ints, self.floats, self.window_s,
                           hashes, tss, expire, count_budget, numbers)
        return numbers

    def _pop_front(self, n: int) -> None:
        idring.ring_drop_front(self.table, self.keys, self.ts, self.clicks, self.ints, self.floats, n)

    def expire(self) -> None:
        """Drop the entries older than the window (after a restore with a smaller window)."""
        idring.ring_expire(self.table, self.keys, self.ts, self.clicks, self.ints, self.floats, self.window_s)

    def _slots(self, start: int) -> np.ndarray:
        """Slots of entry numbers ``start`` .. ``seq - 1`` in order."""
        return np.arange(start, self.seq, dtype=np.int64) % self.capacity

    def _set_meta(self, d: dict) -> None:
        self.floats[F_CLOCK] = -math.inf if d["clock"] is None else d["clock"]
        if d["dropped"] is not None and d["dropped"] > self.floats[F_DROPPED]:
            self.floats[F_DROPPED] = d["dropped"]

    # ------------------------------------------------------------------ checkpoints
    def to_json(self) -> dict:
        slots = self._slots(self.front)
        clicked = np.flatnonzero(self.clicks[slots])
        return {"format": 2, "h": _b64(self.keys[slots]), "ts": _b64(self.ts[slots]),
                "cn": (self.front + clicked).tolist(), "cc": self.clicks[slots][clicked].tolist(),
                "clock": self.clock if math.isfinite(self.clock) else None,
                "dropped": self.dropped_ts if math.isfinite(self.dropped_ts) else None, "seq": self.seq}

    def delta_since(self, from_seq: int) -> dict:
        """What changed since the window held entries up to number ``from_seq``: the entries
        appended since (those still kept, in order), where the kept entries now begin, and
        the click counts changed (``touched``); :meth:`apply_delta` is the inverse."""
        front = self.front
        slots = self._slots(max(from_seq, front))
        kept = self._slots(front)
        flagged = np.flatnonzero(self.touched[kept])
        return {"from": from_seq, "seq": self.seq, "front": front, "h": _b64(self.keys[slots]),
                "ts": _b64(self.ts[slots]), "cn": (front + flagged).tolist(), "cc": self.clicks[kept[flagged]].tolist(),
                "clock": self.clock if math.isfinite(self.clock) else None,
                "dropped": self.dropped_ts if math.isfinite(self.dropped_ts) else None}

    def apply_delta(self, d: dict) -> None:
        """Apply :meth:`delta_since`'s record; raises LolaError if it does not follow this window."""
        if d["from"] != self.seq:
            raise LolaError(f"de-duplication delta starts at entry {d['from']}, the window is at {self.seq}")
        self._pop_front(min(len(self), max(0, d["front"] - self.front)))
        if len(self) == 0:
            self.ints[I_SEQ] = max(self.seq, d["front"])  # the writer appended and dropped these
        hashes, tss = _unb64(d["h"], "<u8", 2).astype(np.uint64), _unb64(d["ts"], "<f8").astype(np.float64)
        numbers = self._append(hashes, tss, False, False)  # a smaller reader drops its front, uncounted
        if (numbers < 0).any() or self.seq != d["seq"]:
            raise LolaError("de-duplication delta appends a key the window holds or skips entries")
        self._set_meta(d)
        front = self.front
        for n, c in zip(d["cn"], d["cc"]):
            if front <= n < self.seq:
                self.clicks[n % self.capacity] = c

    @classmethod
    def from_json(cls, window_s: float, budget_bytes: int, d: dict, expire: bool = True) -> "DedupWindow":
        w = cls(window_s, budget_bytes)
        if "keys" in d:  # checkpoints before format 2 held the keys themselves
            hashes = event_hashes(d["keys"])
            tss = np.asarray(d["ts"], dtype=np.float64)
            index = {k: i for i, k in enumerate(d["keys"])}
            start = int(d.get("seq", len(tss))) - len(tss)
            clicks = {start + index[k]: int(v) for k, v in d["clicks"].items() if k in index}
        else:
            hashes, tss = _unb64(d["h"], "<u8", 2).astype(np.uint64), _unb64(d["ts"], "<f8").astype(np.float64)
            start = int(d["seq"]) - len(tss)
            clicks = dict(zip(d["cn"], d["cc"]))
        w.ints[I_SEQ] = start
        w._append(hashes, tss, False, False)
        w._set_meta(d)
        front = w.front
        for n, c in clicks.items():
            if n >= front:
                w.clicks[n % w.capacity] = c
        if expire:  # a chain restore (base + deltas) expires once, after its last delta
            w.expire()  # a smaller window than the writer's applies at once
        return w
