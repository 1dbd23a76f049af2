"""The checkpoint half of :class:`~lola.stream.processor.ShardProcessor` (a mixin, split out
to keep modules short): the full record (a base), the restore point it becomes, and the
incremental records of lola.stream.delta applied on top of a base.

A full record is ``CHECKPOINT_MAGIC``, a 4-byte header length, the JSON header (offsets,
registry, windows; a chain's ``epoch`` and ``owner``) and the ``BanditState`` blob.

The restore point (fault isolation rolls a shard back to it) is held in memory as the record
*without* its de-duplication window (``"dedup": "held"``) plus a copy of the window in a
second preallocated ring (:attr:`_restore_seen`): the window is most of a full record and
grows as it fills, so holding it as bytes would make the worker's memory follow the
window's fill; the copy is a fixed size from the first restore point on.
"""

from __future__ import annotations

import math
import struct
import time
from typing import Any

import orjson

from lola.errors import LolaError
from lola.stream.contextual_shard import ContextualShard
from lola.stream.dedup import DedupWindow
from lola.stream.delta import ChainTracker, apply_delta, encode_delta
from lola.stream.lifecycle import VariantGate
from lola.stream.shard import Experiment, IdWindow, ProcessorConfig

CHECKPOINT_MAGIC = b"LOLACKP1"
CHECKPOINT_VERSION = 2
#: Checkpoint versions this build restores (1: main before issue 19; its de-duplication
#: ids had no experiment or type and are kept as a legacy window, see from_checkpoint).
READABLE_VERSIONS = (1, 2)


class DeltaNotApplied(LolaError):
    """Delta ``index`` of a chain did not apply (the ones before it did)."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


class ShardCheckpoints:
    """Checkpoint methods of ShardProcessor (see module docstring)."""

    def mark(self, topic: str = "", chain: dict[str, Any] | None = None) -> bytes:
        """Serialise the shard (a checkpoint record, a chain's base with ``chain``) and make
        it the restore point."""
        meta, state = self._checkpoint_meta(topic, chain), self.state.to_bytes()
        blob = _assemble(meta, state)
        self._hold_restore_point(meta, state)
        self._restore_deltas = []
        self.marks += 1
        self._journal = []
        self._journal_records = 0
        return blob

    def mark_delta(self, tracker: ChainTracker, head: dict[str, Any]) -> bytes | None:
        """Serialise what changed since ``tracker`` (a delta record, lola.stream.delta) and
        append it to the restore point; None if only a full record can express it."""
        blob = encode_delta(self, tracker, head)
        if blob is not None:
            self._restore_deltas.append(blob)
            self._journal = []
            self._journal_records = 0
        return blob

    def apply_delta(self, blob: bytes) -> None:
        """Apply the next delta of a restored chain (see :func:`lola.stream.delta.apply_delta`)."""
        apply_delta(self, blob)
        self._restore_deltas.append(blob)

    def _hold_restore_point(self, meta: dict[str, Any], state: bytes) -> None:
        """The restore point: the record less its window, and the window copied to the backup ring."""
        self._restore_blob = _assemble({**meta, "dedup": HELD}, state)
        self.reserve_restore_ring()
        self._restore_seen.copy_from(self.seen)

    def reserve_restore_ring(self) -> None:
        """Allocate the restore point's window ring (the worker does at assignment, so the
        de-duplication budget is resident from the first event, not from the first checkpoint)."""
        if self._restore_seen is None or self._restore_seen.capacity != self.seen.capacity:
            self._restore_seen = DedupWindow(self.seen.window_s, self.seen.budget_bytes)

    def finish_restore(self) -> None:
        """After a chain's last delta: this reader's window limits (as a full restore applies them)."""
        self.seen.expire()
        self.imp_by_request.truncate()
        self.decided.truncate()

    @classmethod
    def from_chain(cls, base: bytes, deltas: list[bytes], config: ProcessorConfig | None = None,
                   gate: VariantGate | None = None, held: DedupWindow | None = None) -> "ShardProcessor":
        """A base checkpoint and the deltas that follow it (each must follow: DeltaNotApplied,
        with the index of the first that does not; LolaError if the base does not restore).
        ``held``: the window of a held restore point's base (a rollback; see from_checkpoint)."""
        proc = cls.from_checkpoint(base, config, gate=gate, expire=not deltas, held=held)
        for i, blob in enumerate(deltas):
            try:
                proc.apply_delta(blob)
            except LolaError as exc:
                proc.ctx.close()
                raise DeltaNotApplied(str(exc), i) from exc
        if deltas:
            proc.finish_restore()
        return proc

    def to_checkpoint(self, topic: str, chain: dict[str, Any] | None = None) -> bytes:
        """One self-consistent record: the state exactly as of input offset ``next_offset``.

        ``chain``: the epoch and owner of an incremental chain this record is the base of
        (lola.stream.delta); readers without chains ignore them.
        """
        return _assemble(self._checkpoint_meta(topic, chain), self.state.to_bytes())

    def _checkpoint_meta(self, topic: str, chain: dict[str, Any] | None, window: bool = True) -> dict[str, Any]:
        """The record's header; ``window=False``: a held restore point's (no de-duplication window)."""
        return {**(chain or {}), "version": CHECKPOINT_VERSION, "topic": topic, "partition": self.partition,
                "next_offset": self.next_offset, "created": time.time(),
                "experiments": [e.to_json() for e in self.experiments.values()],
                "dedup": self.seen.to_json() if window else HELD, "imp_by_request": self.imp_by_request.items(),
                "decided": self.decided.items(), "imp_seq": self.imp_by_request.seq, "decided_seq": self.decided.seq, "clock": self.clock if math.isfinite(self.clock) else None,
                "legacy_seen": None if self.legacy_seen is None else self.legacy_seen.items(),
                "legacy_until": self.legacy_until if math.isfinite(self.legacy_until) else None,
                "contextual": self.ctx.to_json() if self.ctx.experiments else None}

    @staticmethod
    def checkpoint_offset(blob: bytes) -> int:
        meta, _ = _split_checkpoint(blob)
        return int(meta["next_offset"])

    @classmethod
    def from_checkpoint(cls, blob: bytes, config: ProcessorConfig | None = None,
                        gate: VariantGate | None = None, expire: bool = True,
                        held: DedupWindow | None = None) -> "ShardProcessor":
        """Restore a checkpoint of this build (version 2) or of main before issue 19 (version 1).

        Version 1 upgrade: variant states come from the arms' active flags (active, else
        retired, with no eviction clock); its de-duplication ids (bare event ids) are kept
        as a legacy window, consulted besides the new one until the de-duplication horizon
        passes the newest ts they hold (then any re-send of them is ``stale`` anyway).
        ``expire=False`` (the base of a chain, see :meth:`from_chain`) keeps the writer's
        windows whole until :meth:`finish_restore`. ``held``: a held restore point's window
        (its record says ``"dedup": "held"``; the shard takes this window as it is), and the
        restored shard then keeps the caller's restore point (a rollback); otherwise the
        restored shard's restore point is this record, held.
        """
        from lola.kernels import BanditState

        meta, state_blob = _split_checkpoint(blob)
        cfg = config or ProcessorConfig()
        if meta["version"] == 1:
            seen = None
        elif meta["dedup"] == HELD:
            if held is None:
                raise LolaError("a held restore point restores only with its window")
            seen = held
        else:
            seen = DedupWindow.from_json(cfg.dedup_window_s, cfg.dedup_budget_bytes, meta["dedup"], expire)
        proc = cls(int(meta["partition"]), cfg, state=BanditState.from_bytes(state_blob),
                   next_offset=int(meta["next_offset"]), gate=gate, seen=seen)
        for d in meta["experiments"]:
            k = len(d["variants"])
            exp = Experiment.from_json(d, proc.state.active[d["row"], :k].tolist())
            proc.experiments[exp.experiment_id] = exp
            proc.by_row[exp.row] = exp
            if exp.archived_at is not None or exp.retired_at:
                proc.expiring.add(exp.experiment_id)
        cfg = proc.config
        if meta["version"] == 1:
            proc.legacy_seen = IdWindow.from_items(cfg.dedup_window, meta["seen"])
            proc.legacy_until = max((v for v in meta["seen"][1] if v >= 0), default=math.inf)
        else:
            proc.clock = -math.inf if meta["clock"] is None else meta["clock"]
            if meta["legacy_seen"] is not None:
                proc.legacy_seen = IdWindow.from_items(cfg.dedup_window, meta["legacy_seen"])
                proc.legacy_until = math.inf if meta["legacy_until"] is None else meta["legacy_until"]
        proc.imp_by_request = IdWindow.from_items(proc.config.dedup_window, meta["imp_by_request"],
                                                  meta.get("imp_seq"), expire)
        keys, values = meta["decided"]
        proc.decided = IdWindow.from_items(proc.config.request_memory, [keys, [tuple(v) for v in values]],
                                           meta.get("decided_seq"), expire)
        if meta.get("contextual"):
            proc.ctx = ContextualShard.from_json(meta["contextual"], proc.config.join_window_s,
                                                 proc.config.join_window_bytes)
        if held is None:  # in this build's format (a version-1 record's window is the legacy one)
            proc._hold_restore_point(proc._checkpoint_meta(meta.get("topic", ""), None, window=False), state_blob)
        return proc


#: The de-duplication field of a held restore point (never written to Kafka).
HELD = "held"


def _assemble(meta: dict[str, Any], state: bytes) -> bytes:
    meta_bytes = orjson.dumps(meta)
    return CHECKPOINT_MAGIC + struct.pack(">I", len(meta_bytes)) + meta_bytes + state


def checkpoint_meta(blob: bytes) -> dict[str, Any]:
    """The header of a full checkpoint record (offset, epoch and owner of a chain's base, ...)."""
    return _split_checkpoint(blob)[0]


def _split_checkpoint(blob: bytes) -> tuple[dict[str, Any], bytes]:
    if not blob or not blob.startswith(CHECKPOINT_MAGIC) or len(blob) < len(CHECKPOINT_MAGIC) + 4:
        raise LolaError("not a lola checkpoint record (bad magic)")
    (n,) = struct.unpack(">I", blob[8:12])
    meta = orjson.loads(blob[12:12 + n])
    if meta.get("version") not in READABLE_VERSIONS:
        raise LolaError(f"checkpoint version {meta.get('version')} is not supported "
                        f"(this build reads {', '.join(map(str, READABLE_VERSIONS))})")
    return meta, blob[12 + n:]
