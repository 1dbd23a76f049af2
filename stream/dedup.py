"""De-duplication by event time within a byte budget (one per partition-shard).

Keyed by (experiment, event type, event id): the same id in two experiments, or an
impression and a click sharing an id, are different events. An entry is kept while its
``ts`` is within ``window_s`` of the newest accepted event time of the partition
(:attr:`clock`); when the entries' estimated size passes ``budget_bytes`` the oldest
are dropped early (the window *shrinks*; :attr:`budget_evictions` counts them).

The guarantee is "never counted twice", never "maybe": an event whose ``ts`` is not
newer than :attr:`horizon` (the newest ``ts`` ever dropped, or ``clock - window_s``)
cannot be checked against what was dropped, so the processor dead-letters it
(``stale``) instead of counting it. A re-sent event carries its original ``ts``, so a
duplicate is either still remembered (dropped as a duplicate) or at/below the horizon
(dead-lettered ``stale``).

Why not a library: the entries are in the checkpoint and must restore exactly in
arrival order with their expiry rule; a dict plus a deque of keys is that, in ~60 lines.
"""

from __future__ import annotations

import math
from collections import deque
from itertools import islice

from lola.errors import LolaError

#: Estimated bytes of one entry besides its key's characters: the key object, a float
#: value, its dict slot and its deque slot (CPython 3.11, 64-bit; docs/operations/limits.md).
ENTRY_OVERHEAD_BYTES = 140


#: One character per counted event type keeps keys (memory and checkpoint bytes) short.
_KIND_CODE = {"impression": "i", "click": "c", "conversion": "v"}


def dedup_key(experiment_id: str, kind: str, event_id: str) -> str:
    """The window's key of an event: type code, experiment and id, separated by a unit separator."""
    return f"{_KIND_CODE[kind]}\x1f{experiment_id}\x1f{event_id}"


class DedupWindow:
    """(experiment, type, id) -> ts, for ``window_s`` of event time, within ``budget_bytes``."""

    __slots__ = ("window_s", "budget_bytes", "map", "order", "bytes", "clock", "dropped_ts", "budget_evictions",
                 "clicks", "seq", "touched")

    def __init__(self, window_s: float, budget_bytes: int) -> None:
        self.window_s = float(window_s)
        self.budget_bytes = int(budget_bytes)
        self.map: dict[str, float] = {}
        self.order: deque[str] = deque()
        self.clicks: dict[str, int] = {}   # impression key -> clicks attributed to it (the per-impression cap)
        self.bytes = 0
        self.clock = -math.inf
        self.dropped_ts = -math.inf
        self.budget_evictions = 0
        # Incremental checkpoints (lola.stream.delta): entries ever appended (the first kept
        # entry is number ``seq - len(order)``) and impression keys whose click count changed.
        self.seq = 0
        self.touched: set[str] = set()

    @property
    def horizon(self) -> float:
        """Events with ``ts <= horizon`` cannot be checked (they are dead-lettered ``stale``)."""
        return max(self.dropped_ts, self.clock - self.window_s)

    def __contains__(self, key: str) -> bool:
        return key in self.map

    def get(self, key: str) -> float | None:
        return self.map.get(key)

    def put(self, key: str, ts: float) -> None:
        if key in self.map:
            return
        self.map[key] = ts
        self.order.append(key)
        self.seq += 1
        self.bytes += len(key) + ENTRY_OVERHEAD_BYTES
        if ts > self.clock:
            self.clock = ts
        self._expire()

    def add_click(self, key: str) -> None:
        """One more click attributed to the impression ``key`` (the per-impression cap)."""
        self.clicks[key] = self.clicks.get(key, 0) + 1
        self.touched.add(key)

    def _pop_front(self) -> None:
        key = self.order.popleft()
        ts = self.map.pop(key)
        self.clicks.pop(key, None)
        self.touched.discard(key)  # so touched stays within the window (bounded)
        self.bytes -= len(key) + ENTRY_OVERHEAD_BYTES
        if ts >= self.clock - self.window_s:
            self.budget_evictions += 1
        if ts > self.dropped_ts:
            self.dropped_ts = ts

    def _expire(self) -> None:
        order, m = self.order, self.map
        oldest_kept = self.clock - self.window_s
        while order and (m[order[0]] < oldest_kept or self.bytes > self.budget_bytes):
            self._pop_front()

    def to_json(self) -> dict:
        return {"keys": list(self.map), "ts": list(self.map.values()), "clicks": self.clicks,
                "clock": self.clock if math.isfinite(self.clock) else None,
                "dropped": self.dropped_ts if math.isfinite(self.dropped_ts) else None, "seq": self.seq}

    def delta_since(self, from_seq: int) -> dict:
        """What changed since the window held entries up to number ``from_seq``: the entries
        appended since (those still kept, in order), where the kept entries now begin, and
        the click counts changed (``touched``); :meth:`apply_delta` is the inverse."""
        front = self.seq - len(self.order)
        n_new = self.seq - max(from_seq, front)
        tail = list(islice(reversed(self.order), n_new))[::-1]
        m = self.map
        return {"from": from_seq, "seq": self.seq, "front": front, "keys": tail, "ts": [m[k] for k in tail],
                "clicks": {k: self.clicks[k] for k in self.touched if k in self.clicks},
                "clock": self.clock if math.isfinite(self.clock) else None,
                "dropped": self.dropped_ts if math.isfinite(self.dropped_ts) else None}

    def apply_delta(self, d: dict) -> None:
        """Apply :meth:`delta_since`'s record; raises LolaError if it does not follow this window."""
        if d["from"] != self.seq:
            raise LolaError(f"de-duplication delta starts at entry {d['from']}, the window is at {self.seq}")
        n_drop = min(len(self.order), max(0, d["front"] - (self.seq - len(self.order))))
        evictions = self.budget_evictions
        for _ in range(n_drop):
            self._pop_front()
        self.budget_evictions = evictions  # the writer's drops, counted where they happened
        for key, ts in zip(d["keys"], d["ts"]):
            if key in self.map:
                raise LolaError("de-duplication delta appends a key the window holds")
            self.map[key] = ts
            self.order.append(key)
            self.bytes += len(key) + ENTRY_OVERHEAD_BYTES
        self.seq = d["seq"]
        for key, n in d["clicks"].items():
            if key in self.map:
                self.clicks[key] = int(n)
        self.clock = -math.inf if d["clock"] is None else d["clock"]
        if d["dropped"] is not None and d["dropped"] > self.dropped_ts:
            self.dropped_ts = d["dropped"]

    @classmethod
    def from_json(cls, window_s: float, budget_bytes: int, d: dict, expire: bool = True) -> "DedupWindow":
        w = cls(window_s, budget_bytes)
        w.map = dict(zip(d["keys"], d["ts"]))
        w.order = deque(d["keys"])
        w.clicks = {k: int(v) for k, v in d["clicks"].items()}
        w.bytes = sum(len(k) for k in w.map) + ENTRY_OVERHEAD_BYTES * len(w.map)
        w.clock = -math.inf if d["clock"] is None else d["clock"]
        w.dropped_ts = -math.inf if d["dropped"] is None else d["dropped"]
        w.seq = int(d.get("seq", len(w.map)))  # checkpoints before incremental ones: numbered from here
        if expire:  # a chain restore (base + deltas) expires once, after its last delta
            w._expire()  # a smaller window or budget than the writer's applies at once
        return w
