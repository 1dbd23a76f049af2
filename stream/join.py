"""The join window of contextual experiments: a decision's featurized context until its outcome.

A contextual decision trains only when its outcome comes back: the impression (and click or
conversion) naming the request's ``request_id`` (or an ``impression_id`` whose impression
named it) trains the kernel on (u, arm, reward). So the worker keeps, per request,
``(experiment row, slot, u)`` for ``join_window_s`` (default 600 s: Azure Personalizer's
reward wait) under a byte budget per partition (``join_window_bytes``); the oldest entries
go first. An entry that leaves the window without any outcome counts as never joined
(per experiment, in the snapshot's ``contextual`` part, and per partition in the
``lola_context_never_joined`` gauge).

Separate from the attribution window: that one decides whether a click counts at all
(days), this one only how long a context is kept for training (minutes). ``u`` is the
featurized context (lola.stream.context), never the raw one.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

#: Accounted bytes per entry besides the request id and u: the dict slot, the entry object
#: and the numpy array header, measured with tracemalloc (docs/contextual.md).
ENTRY_OVERHEAD_BYTES = 400


@dataclass
class JoinEntry:
    row: int
    slot: int
    u: np.ndarray
    ts: float
    joined: bool = False


class JoinWindow:
    """request_id -> :class:`JoinEntry`, oldest first, bounded by age and bytes."""

    def __init__(self, window_s: float, max_bytes: int) -> None:
        self.window_s = float(window_s)
        self.max_bytes = int(max_bytes)
        self.entries: OrderedDict[str, JoinEntry] = OrderedDict()
        self.by_impression: dict[str, str] = {}
        self.bytes = 0
        self.never_joined: dict[int, int] = {}   # experiment row -> count
        self.joined = 0

    @staticmethod
    def _size(request_id: str, u: np.ndarray) -> int:
        return len(request_id) + u.nbytes + ENTRY_OVERHEAD_BYTES

    def put(self, request_id: str, row: int, slot: int, u: np.ndarray, ts: float) -> None:
        old = self.entries.pop(request_id, None)
        if old is not None:
            self.bytes -= self._size(request_id, old.u)
        self.entries[request_id] = JoinEntry(row, slot, u, ts)
        self.bytes += self._size(request_id, u)
        self.expire(ts)

    def link(self, impression_id: str, request_id: str) -> None:
        """Remember that an impression named a request (for clicks that name only the impression)."""
        if request_id in self.entries:
            self.by_impression[impression_id] = request_id

    def get(self, request_id: str | None, impression_id: str | None = None) -> JoinEntry | None:
        """The entry an outcome names (request id first, then its impression); marks it joined."""
        if request_id is None and impression_id is not None:
            request_id = self.by_impression.get(impression_id)
        entry = self.entries.get(request_id) if request_id is not None else None
        if entry is not None and not entry.joined:
            entry.joined = True
            self.joined += 1
        return entry

    def expire(self, now: float) -> None:
        """Drop entries older than the window, then the oldest while over the byte budget."""
        cutoff = now - self.window_s
        entries = self.entries
        while entries:
            rid, e = next(iter(entries.items()))
            if e.ts >= cutoff and self.bytes <= self.max_bytes:
                break
            entries.popitem(last=False)
            self.bytes -= self._size(rid, e.u)
            if not e.joined:
                self.never_joined[e.row] = self.never_joined.get(e.row, 0) + 1
        if len(self.by_impression) > 2 * len(entries) + 1024:
            self.by_impression = {i: r for i, r in self.by_impression.items() if r in entries}

    def drop_row(self, row: int) -> None:
        """Forget an evicted experiment's entries and count (its row may be reused)."""
        for rid in [rid for rid, e in self.entries.items() if e.row == row]:
            self.bytes -= self._size(rid, self.entries.pop(rid).u)
        self.never_joined.pop(row, None)
        self.by_impression = {i: r for i, r in self.by_impression.items() if r in self.entries}

    # ------------------------------------------------------------------ checkpoints
    def to_json(self) -> dict:
        return {"entries": [[rid, e.row, e.slot, e.u.tolist(), e.ts, e.joined] for rid, e in self.entries.items()],
                "by_impression": self.by_impression, "never_joined": [[r, n] for r, n in self.never_joined.items()],
                "joined": self.joined}

    @classmethod
    def from_json(cls, d: dict, window_s: float, max_bytes: int) -> "JoinWindow":
        w = cls(window_s, max_bytes)
        for rid, row, slot, u, ts, joined in d["entries"]:
            w.entries[rid] = JoinEntry(int(row), int(slot), np.asarray(u, dtype=np.float64), float(ts), bool(joined))
            w.bytes += cls._size(rid, w.entries[rid].u)
        w.by_impression = dict(d["by_impression"])
        w.never_joined = {int(r): int(n) for r, n in d["never_joined"]}
        w.joined = int(d["joined"])
        return w
