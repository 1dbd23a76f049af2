"""The restore side of incremental checkpoints: pick a base and the deltas that follow it.

Records on state partition ``p`` carry the key ``G = group:topic:p`` (a base: a full
checkpoint, with ``epoch`` and ``owner`` in its header) or ``G:delta:j`` (the ``j``-th
delta of a chain, lola.stream.delta). :func:`select_chain` is the walk of
docs/operations/checkpoints.md:

1. the base with the highest ``(epoch, next_offset)`` (a later record wins a tie). A base
   without ``epoch`` (written before deltas existed, or by an older build during a rolling
   upgrade or a rollback) ranks in the highest epoch seen before it in the log (0 if
   none): written later, it supersedes the chains before it;
2. the deltas of that base's epoch *and owner* (an epoch-less base has none), in ``j``
   order from 1, while each one's ``from_offset`` equals the previous ``to_offset``, at
   most ``max_deltas``; stop at the first gap.

The owner (a random id per worker process) keeps two owners' chains apart when a zombie
and its successor both write: their epochs may coincide, their owners never do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable

from lola.errors import LolaError
from lola.stream.delta import delta_meta
from lola.stream.lifecycle import VariantGate
from lola.stream.processor import ShardProcessor
from lola.stream.shard_checkpoint import DeltaNotApplied, checkpoint_meta
from lola.stream.shard import ProcessorConfig

log = logging.getLogger("lola.stream.worker")

DELTA_KEY_INFIX = b":delta:"


def delta_key(base_key: bytes, j: int) -> bytes:
    """The compaction key of slot ``j`` of a chain (one record per slot survives compaction)."""
    return base_key + DELTA_KEY_INFIX + str(j).encode()


@dataclass
class Chain:
    """A base, the deltas that follow it, and the highest epoch seen on the partition."""

    base: bytes
    deltas: list[bytes] = field(default_factory=list)
    epoch: int = 0        # the base's
    max_epoch: int = 0    # of every record of this key read (a new owner starts above it)
    next_offset: int = 0  # the chain end's

    @property
    def records(self) -> int:
        return 1 + len(self.deltas)


def select_chain(records: Iterable[tuple[bytes | None, bytes | None]], base_key: bytes,
                 max_deltas: int | None = None) -> Chain | None:
    """The chain to restore from ``(key, value)`` records in log order (None: no base).

    Streams: holds only the best base so far and the deltas of its epoch and owner (a
    better base drops them), so memory is one base and at most one chain whatever the
    number of records read. ``max_deltas``: at most this many deltas are taken (a shorter
    prefix restores exactly too: the events after it are replayed).
    """
    prefix = base_key + DELTA_KEY_INFIX
    best: tuple[int, int] | None = None
    base = owner = None
    deltas: dict[int, tuple[dict, bytes]] = {}
    max_epoch = 0
    for key, value in records:
        if not value or key is None:
            continue
        try:
            if key == base_key:
                meta = checkpoint_meta(value)
                # An epoch-less base (a build without deltas: a rolling upgrade or a
                # rollback) ranks in the highest epoch seen before it in the log, so it
                # supersedes every base written before it at a lower offset.
                epoch = int(meta["epoch"]) if "epoch" in meta else max_epoch
                rank = (epoch, int(meta["next_offset"]))
                max_epoch = max(max_epoch, epoch)
                if best is None or rank >= best:
                    if best is None or (rank[0], meta.get("owner")) != (best[0], owner):
                        deltas = {}
                    best, base, owner = rank, value, meta.get("owner")
            elif key.startswith(prefix):
                meta = delta_meta(value)
                max_epoch = max(max_epoch, int(meta["epoch"]))
                if best is not None and meta["epoch"] == best[0] and owner is not None and meta.get("owner") == owner:
                    deltas[int(meta["j"])] = (meta, value)  # a later copy of a slot wins
        except (LolaError, KeyError, TypeError, ValueError) as exc:
            log.error("unreadable checkpoint record skipped", extra={"error": str(exc)[:200]})
    if base is None or best is None:
        return None
    chain = Chain(base, epoch=best[0], max_epoch=max_epoch, next_offset=best[1])
    j = 1
    while (j in deltas and deltas[j][0]["from_offset"] == chain.next_offset
           and (max_deltas is None or j <= max_deltas)):
        chain.deltas.append(deltas[j][1])
        chain.next_offset = int(deltas[j][0]["to_offset"])
        j += 1
    return chain


def restore(chain: Chain, config: ProcessorConfig | None = None, gate: VariantGate | None = None) -> ShardProcessor:
    """The shard as of ``chain``'s end; a delta that will not apply ends the chain before it
    (logged), so the shard restores from the longest prefix that does (exact: the events
    after it are replayed). Builds at most twice: the prefix is known from the failure."""
    try:
        return ShardProcessor.from_chain(chain.base, chain.deltas, config, gate)
    except DeltaNotApplied as exc:
        log.error("checkpoint delta not applied; restoring from the chain before it",
                  extra={"deltas": len(chain.deltas), "failed": exc.index, "error": str(exc)[:200]})
        return ShardProcessor.from_chain(chain.base, chain.deltas[:exc.index], config, gate)
