"""The restore side of incremental checkpoints: pick a base and the deltas that follow it.

Records on state partition ``p`` carry the key ``G = group:topic:p`` (a base: a full
checkpoint, with ``epoch`` and ``owner`` in its header; checkpoints written before
deltas existed are bases of epoch 0) or ``G:delta:j`` (the ``j``-th delta of a chain,
lola.stream.delta). :func:`select_chain` is the walk of docs/operations/checkpoints.md:

1. the base with the highest ``(epoch, next_offset)`` (a later record wins a tie);
2. the deltas of that base's epoch *and owner*, in ``j`` order from 1, while each
   one's ``from_offset`` equals the previous ``to_offset``; stop at the first gap.

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
from lola.stream.shard_checkpoint import checkpoint_meta
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


def select_chain(records: Iterable[tuple[bytes | None, bytes | None]], base_key: bytes) -> Chain | None:
    """The chain to restore from ``(key, value)`` records in log order (None: no base)."""
    prefix = base_key + DELTA_KEY_INFIX
    best: tuple[int, int] | None = None
    base = owner = None
    deltas: dict[int, tuple[dict, bytes]] = {}
    found: list[tuple[dict, bytes]] = []
    max_epoch = 0
    for key, value in records:
        if not value or key is None:
            continue
        try:
            if key == base_key:
                meta = checkpoint_meta(value)
                rank = (int(meta.get("epoch", 0)), int(meta["next_offset"]))
                max_epoch = max(max_epoch, rank[0])
                if best is None or rank >= best:
                    best, base, owner = rank, value, meta.get("owner")
            elif key.startswith(prefix):
                meta = delta_meta(value)
                max_epoch = max(max_epoch, int(meta["epoch"]))
                found.append((meta, value))
        except (LolaError, KeyError, TypeError, ValueError) as exc:
            log.error("unreadable checkpoint record skipped", extra={"error": str(exc)[:200]})
    if base is None or best is None:
        return None
    for meta, value in found:
        if meta["epoch"] == best[0] and meta.get("owner") == owner:
            deltas[int(meta["j"])] = (meta, value)  # a later copy of a slot wins
    chain = Chain(base, epoch=best[0], max_epoch=max_epoch, next_offset=best[1])
    j = 1
    while j in deltas and deltas[j][0]["from_offset"] == chain.next_offset:
        chain.deltas.append(deltas[j][1])
        chain.next_offset = int(deltas[j][0]["to_offset"])
        j += 1
    return chain


def restore(chain: Chain, config: ProcessorConfig | None = None, gate: VariantGate | None = None) -> ShardProcessor:
    """The shard as of ``chain``'s end; a delta that will not apply ends the chain before it
    (logged), so the shard restores from the longest prefix that does (exact: the events
    after it are replayed)."""
    deltas = list(chain.deltas)
    while True:
        try:
            return ShardProcessor.from_chain(chain.base, deltas, config, gate)
        except LolaError as exc:
            if not deltas:
                raise
            log.error("checkpoint delta not applied; restoring from the chain before it",
                      extra={"deltas": len(deltas), "error": str(exc)[:200]})
            deltas.pop()
