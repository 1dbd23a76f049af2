"""Incremental checkpoints: the delta record of one shard and its apply function.

A delta ``D(e, j)`` holds what changed in a :class:`~lola.stream.processor.ShardProcessor`
since the record before it in its chain (the base ``B(e)`` or ``D(e, j - 1)``), so that
base + deltas restores the same state as a full checkpoint written at the last delta's
``to_offset`` (docs/operations/checkpoints.md has the design, the crash table and the
measured sizes):

* every serialised array row of each experiment that changed (new, updated, moved by an
  eviction: rows are addressed by experiment id, the row number travels with them), its
  registry entry (in full only if more than its version, newest ts and row changed: one
  event changes just those) and its parameters (only if they or its row changed), the
  ids evicted and the new row count;
* the de-duplication window and the two request-id windows as "entries appended (still
  kept) + where the kept entries begin now + values changed in place" (all three are
  FIFO, so this is exact);
* the log clock, the legacy window's presence and the contextual experiments' state (in
  full: their models are few and not row-addressed; their join window goes with them, up
  to its byte budget, so a busy contextual partition's chain soon collapses to bases).

What changed is found by comparison with a :class:`ChainTracker`, the reference taken
when the previous record was serialised (a copy of the serialised array rows, each
experiment's row, version, parameters and object, the windows' sequence numbers), not by trusting
every code path to report its changes. Anything the comparison cannot express (a
rollback, a change of array capacity, a re-created experiment id whose registry position
moved, the journal's own restore point) makes :func:`encode_delta` return None: the
checkpointer writes a base. A re-created id in place is a different object: sent in full.
"""

from __future__ import annotations

import io
import math
import struct
import time
from typing import Any

import numpy as np
import orjson

from lola.errors import LolaError
from lola.kernels.compaction import SERIALISED, params_from_json, params_to_json
from lola.stream.contextual_shard import ContextualShard
from lola.stream.shard import Experiment

DELTA_MAGIC = b"LOLADLT1"
DELTA_VERSION = 1

#: The shard (lola.stream.processor.ShardProcessor; not imported: it imports this module).
Shard = Any


class ChainTracker:
    """The reference a delta is computed against: the shard as its last record was serialised.

    Holds a copy of the serialised array rows (about the state's array bytes: bounded by
    ``max_experiments_per_partition``), and clears the windows' ``touched`` marks.
    """

    __slots__ = ("arrays", "shape", "rows", "order", "params", "entries", "objects", "seen_seq", "imp_seq",
                 "decided_seq", "rollbacks", "marks", "legacy", "next_offset")

    def __init__(self, proc: Shard) -> None:
        st = proc.state
        self.arrays = st.copy_rows()
        self.shape = (st.capacity_experiments, st.capacity_arms, st.feature_dim)
        self.rows = {eid: (e.row, e.version) for eid, e in proc.experiments.items()}
        self.order = list(proc.experiments)
        self.params = [st.params(r) for r in range(st.n_experiments)]
        self.entries = {eid: _entry(e) for eid, e in proc.experiments.items()}
        # The registry's objects themselves (references, not copies): an id evicted and
        # created again within one interval is a new object even where its rows, row,
        # version and parameters all match the old one's, and is sent in full.
        self.objects = dict(proc.experiments)
        self.seen_seq = proc.seen.seq
        self.imp_seq = proc.imp_by_request.seq
        self.decided_seq = proc.decided.seq
        for window in (proc.seen, proc.imp_by_request, proc.decided):
            window.clear_touched()
        self.rollbacks = proc.rollbacks
        self.marks = proc.marks
        self.legacy = proc.legacy_seen is not None
        self.next_offset = proc.next_offset


def _entry(e: Experiment) -> tuple:
    """A registry entry without its hot fields (version, newest ts, row): when this is unchanged,
    a delta carries only those (the fields of Experiment.to_json, as tuples)."""
    return (e.policy, e.attribution_window_s, tuple(e.variant_ids), tuple(e.texts), tuple(e.states),
            tuple(e.reasons), tuple(e.retired_at.items()), e.status, e.status_reason, e.best, e.archived_at)


def _dirty(proc: Shard, tr: ChainTracker) -> list[str] | None:
    """Ids of the experiments that changed since ``tr``, in registry order (None: write a base)."""
    st = proc.state
    exps = proc.experiments
    kept = [eid for eid in tr.order if eid in exps]
    if list(exps)[:len(kept)] != kept:
        return None  # an id evicted and created again: its registry position moved
    changed = set()
    by_row = proc.by_row
    for r in st.changed_rows(tr.arrays).tolist():
        changed.add(by_row[r].experiment_id)
    ref_rows, ref_params, ref_objects = tr.rows, tr.params, tr.objects
    out = []
    for eid, e in exps.items():
        if eid in changed or ref_objects.get(eid) is not e:
            out.append(eid)
            continue
        ref = ref_rows.get(eid)
        if ref is None or ref[0] != e.row or ref[1] != e.version:
            out.append(eid)
            continue
        p, q = st.params(e.row), ref_params[e.row]
        if p is not q and p != q:
            out.append(eid)
    return out


def encode_delta(proc: Shard, tr: ChainTracker, head: dict[str, Any]) -> bytes | None:
    """The delta from ``tr`` to the shard now, with ``head`` (epoch, owner, j, topic) in its
    header; None when only a base can express the change (see module docstring)."""
    st = proc.state
    if (proc.rollbacks != tr.rollbacks or proc.marks != tr.marks
            or (st.capacity_experiments, st.capacity_arms, st.feature_dim) != tr.shape
            or (proc.legacy_seen is not None and not tr.legacy)):
        return None
    ids = _dirty(proc, tr)
    if ids is None:
        return None
    exps = proc.experiments
    rows = [exps[eid].row for eid in ids]
    arrays = st.take_rows(rows)
    full, hot, params = [], [], []
    for eid, row in zip(ids, rows):
        e = exps[eid]
        if tr.objects.get(eid) is not e or _entry(e) != tr.entries.get(eid):
            full.append(e.to_json())
            hot.append(None)
        else:  # [row, version, max_ts]: the rest of the entry the reader has
            full.append(None)
            hot.append([row, e.version, e.max_ts if math.isfinite(e.max_ts) else None])
        ref = tr.rows.get(eid)
        p = st.params(row)
        same = ref is not None and ref[0] == row and row < len(tr.params) and (tr.params[row] is p or tr.params[row] == p)
        params.append(None if same else params_to_json(p))
    meta = {**head, "kind": "delta", "version": DELTA_VERSION, "partition": proc.partition,
            "from_offset": tr.next_offset, "to_offset": proc.next_offset, "created": time.time(),
            "n": st.n_experiments, "shape": list(tr.shape),
            "evicted": [eid for eid in tr.order if eid not in exps],
            "ids": ids, "experiments": full, "hot": hot, "params": params,
            "dedup": proc.seen.delta_since(tr.seen_seq),
            "imp_by_request": proc.imp_by_request.delta_since(tr.imp_seq),
            "decided": proc.decided.delta_since(tr.decided_seq),
            "clock": proc.clock if math.isfinite(proc.clock) else None,
            "legacy": proc.legacy_seen is not None,
            "contextual": proc.ctx.to_json() if proc.ctx.experiments else None}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # counts and flags compress well (zlib; numpy reads both forms)
    meta_bytes = orjson.dumps(meta)
    return DELTA_MAGIC + struct.pack(">I", len(meta_bytes)) + meta_bytes + buf.getvalue()


def is_delta(blob: bytes | None) -> bool:
    return bool(blob) and blob.startswith(DELTA_MAGIC)


def delta_meta(blob: bytes) -> dict[str, Any]:
    """The header of a delta record (raises LolaError if it is not one this build reads)."""
    return _split(blob)[0]


def _split(blob: bytes) -> tuple[dict[str, Any], bytes]:
    if not is_delta(blob) or len(blob) < len(DELTA_MAGIC) + 4:
        raise LolaError("not a lola delta checkpoint record (bad magic)")
    (n,) = struct.unpack(">I", blob[8:12])
    try:
        meta = orjson.loads(blob[12:12 + n])
    except orjson.JSONDecodeError as exc:
        raise LolaError(f"unreadable delta checkpoint header: {exc}") from None
    if meta.get("version") != DELTA_VERSION or meta.get("kind") != "delta":
        raise LolaError(f"delta checkpoint version {meta.get('version')} is not supported "
                        f"(this build reads {DELTA_VERSION})")
    return meta, blob[12 + n:]


def apply_delta(proc: Shard, blob: bytes) -> None:
    """Apply one delta to the shard it follows.

    Raises LolaError if the delta does not follow the shard (partition, offsets, array
    shape, window positions) or cannot be read. The links are checked before anything
    changes; an error after that (a corrupt record) leaves the shard half-applied, so the
    caller discards it and rebuilds from the base and the deltas before this one.
    """
    meta, npz = _split(blob)
    st = proc.state
    if meta["partition"] != proc.partition or meta["from_offset"] != proc.next_offset:
        raise LolaError(f"delta of partition {meta['partition']} from offset {meta['from_offset']} does not follow "
                        f"the shard (partition {proc.partition} at offset {proc.next_offset})")
    if list(meta["shape"]) != [st.capacity_experiments, st.capacity_arms, st.feature_dim]:
        raise LolaError(f"delta for arrays {meta['shape']} does not fit the state's")
    for name, window in (("dedup", proc.seen), ("imp_by_request", proc.imp_by_request), ("decided", proc.decided)):
        if meta[name]["from"] != window.seq:
            raise LolaError(f"delta's {name} window starts at {meta[name]['from']}, the shard's is at {window.seq}")
    missing = [eid for eid in meta["evicted"] if eid not in proc.experiments]
    if missing:
        raise LolaError(f"delta evicts unknown experiment(s) {missing[:3]}")
    try:
        with np.load(io.BytesIO(npz), allow_pickle=False) as z:
            arrays = {name: z[name] for name in SERIALISED}
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the same clear error
        raise LolaError(f"unreadable delta checkpoint arrays: {exc}") from None
    exps, params = [], []
    for eid, d, hot, p in zip(meta["ids"], meta["experiments"], meta["hot"], meta["params"]):
        old = proc.experiments.get(eid)
        if d is not None:
            exp = Experiment.from_json(d)
        elif old is None:
            raise LolaError(f"delta updates unknown experiment {eid[:80]}")
        else:  # updated in place below (few allocations: this runs for most changed experiments)
            exp = old
        row = exp.row if hot is None else hot[0]
        if p is None and (old is None or old.row != row):
            raise LolaError(f"delta moves experiment {eid[:80]} without its parameters")
        exps.append((exp, hot))
        params.append(st.params(row) if p is None else params_from_json(p))
    n = meta["n"]
    st.put_rows(n, [e.row if hot is None else hot[0] for e, hot in exps], arrays, params)
    for eid in meta["evicted"]:
        del proc.experiments[eid]
        proc.expiring.discard(eid)
    by_row = proc.by_row
    for r in [r for r in by_row if r >= n]:
        del by_row[r]
    for exp, hot in exps:
        if hot is not None:
            exp.row, exp.version = hot[0], hot[1]
            exp.max_ts = -math.inf if hot[2] is None else hot[2]
        proc.experiments[exp.experiment_id] = exp  # in place if known, else appended (registry order)
        by_row[exp.row] = exp  # every experiment that moved is in the delta; the others keep their rows
        if exp.archived_at is not None or exp.retired_at:
            proc.expiring.add(exp.experiment_id)
        else:
            proc.expiring.discard(exp.experiment_id)
    if len(by_row) != n or len(proc.experiments) != n or any(by_row[e.row] is not e for e, _ in exps):
        raise LolaError(f"delta leaves {len(proc.experiments)} experiments on {len(by_row)} rows, expected {n}")
    proc.seen.apply_delta(meta["dedup"])
    proc.imp_by_request.apply_delta(meta["imp_by_request"])
    proc.decided.apply_delta(meta["decided"], tuple)
    proc.clock = -math.inf if meta["clock"] is None else meta["clock"]
    if not meta["legacy"]:
        proc.legacy_seen, proc.legacy_until = None, -math.inf  # as a full restore without one
    cfg = proc.config
    if meta["contextual"] is not None or proc.ctx.experiments:
        proc.ctx.close()
        proc.ctx = (ContextualShard.from_json(meta["contextual"], cfg.join_window_s, cfg.join_window_bytes)
                    if meta["contextual"] is not None else
                    ContextualShard(cfg.context_user_dim, cfg.context_arm_dim, cfg.join_window_s, cfg.join_window_bytes))
    proc.next_offset = int(meta["to_offset"])
