"""The worker's one checkpointer: periodic and synchronous checkpoints of its shards.

:class:`Checkpointer` serves both paths with the same steps, in this order, for every
record (base or delta):

1. **serialise** each changed shard: a delta (what changed since the chain's previous
   record, lola.stream.delta) while the chain allows one, else a base (a full record,
   :meth:`ShardProcessor.mark`); the state exactly as of the shard's ``next_offset``;
2. **delivery barrier**: every output produced before step 1 is acknowledged (failed
   outputs are produced again first);
3. **produce** one record per shard to its own state partition (a record above the state
   topic's ``max.message.bytes`` is refused: metric + log, never produced);
4. **ack**: wait for the records' delivery reports;
5. **commit** the shards' ``next_offset`` as group offsets (advisory: lag only).

The periodic path (:meth:`begin` / :meth:`advance`, polled from the loop) never blocks
decisions; the synchronous path (:meth:`checkpoint`, revoke and SIGTERM) flushes instead
of polling and first lets a periodic round in progress finish.

Chain policy (docs/operations/checkpoints.md): a new base ``B(e+1)`` when the chain's
deltas would exceed half the base's bytes, when ``checkpoint_delta_max_chain`` deltas
follow the base, when the shard holds fewer than half the experiments its base (of at
least :data:`SHRUNK_BASE_MIN_BYTES`) held, when a delta cannot express the change, or after any record of the
chain was not acknowledged (failed, refused, abandoned, given way): the chain is then
*broken* and only a new base, in a new epoch, continues it. Rounds are sequential (a
round is serialised only after the previous one was acknowledged or given up), so no
delta of epoch ``e+1`` is produced before ``B(e+1)`` is acknowledged.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from lola.errors import BrokerError
from lola.stream import kafka as kf
from lola.stream.chain import DELTA_KEY_INFIX, delta_key
from lola.stream.delta import ChainTracker

log = logging.getLogger("lola.stream.worker")

#: A periodic checkpoint not written within this is abandoned and retried with newer state.
CHECKPOINT_TIMEOUT_S = 30.0
#: Bytes kept free below max.message.bytes for the record's key, headers and batch framing.
RECORD_OVERHEAD_BYTES = 4096
#: After a refused checkpoint the shard is not serialised again for this long.
REFUSED_RETRY_S = 60.0
#: A base at least this large is replaced once the shard holds fewer than half its experiments
#: (after an archive wave): the worker holds its restore point's base and deltas in memory,
#: and a restart would read them, so a large base of evicted experiments is not kept.
SHRUNK_BASE_MIN_BYTES = 1 << 20


class PendingCheckpoint:
    """A periodic checkpoint between serialisation and acknowledgement."""

    __slots__ = ("blobs", "started", "created", "produced", "sent", "results")

    def __init__(self, blobs: dict[int, tuple[bytes, bytes, int]], started: float, created: float) -> None:
        self.blobs = blobs          # partition -> (key, record, the next input offset it reflects)
        self.started = started
        self.created = created
        self.produced = False
        self.sent: set[int] = set()
        self.results: dict[int, Any] = {}


class ShardChain:
    """Where a partition's chain stands: epoch, owner, deltas since the base, the reference."""

    __slots__ = ("epoch", "j", "base_bytes", "base_experiments", "chain_bytes", "tracker", "broken")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch             # the current base's (the next base takes epoch + 1)
        self.j = 0                     # deltas written after it
        self.base_bytes = 0
        self.base_experiments = 0      # experiments the base held
        self.chain_bytes = 0
        self.tracker: ChainTracker | None = None
        self.broken = True             # only a base continues (set until the first base)

    def next_record(self, shard: Any, key: bytes, topic: str, owner: str, deltas: bool,
                    max_chain: int) -> tuple[bytes, bytes]:
        """Serialise the shard's next record of this chain: ``(key, record)``; the chain
        policy of the module docstring. The chain moves on at once (rounds are sequential:
        a record that is then not acknowledged marks the chain broken)."""
        shrunk = self.base_bytes >= SHRUNK_BASE_MIN_BYTES and 2 * len(shard.experiments) < self.base_experiments
        if deltas and not self.broken and self.tracker is not None and self.j < max_chain and not shrunk:
            blob = shard.mark_delta(self.tracker, {"epoch": self.epoch, "owner": owner, "j": self.j + 1,
                                                   "topic": topic})
            if blob is not None and self.chain_bytes + len(blob) <= self.base_bytes // 2:
                self.j += 1
                self.chain_bytes += len(blob)
                self.tracker = ChainTracker(shard)
                return delta_key(key, self.j), blob
        self.epoch += 1
        self.j = self.chain_bytes = 0
        self.broken = False
        blob = shard.mark(topic, {"epoch": self.epoch, "owner": owner})
        self.base_bytes, self.base_experiments = len(blob), len(shard.experiments)
        self.tracker = ChainTracker(shard) if deltas else None
        return key, blob


class Checkpointer:
    """Both checkpoint paths of one worker (see module docstring); ``w`` is the Worker
    (its shards, producer, consumer, delivery tracker, metrics, settings, limit)."""

    def __init__(self, worker: Any) -> None:
        self.w = worker
        self.owner = uuid.uuid4().hex[:16]  # this process's chains (never interleave with another's)
        self.pending: PendingCheckpoint | None = None
        self.checkpointed_at: dict[int, float] = {}
        self.checkpointed_offset: dict[int, int] = {}
        self.refused_until: dict[int, float] = {}  # partition -> monotonic time of the next try
        self.chains: dict[int, ShardChain] = {}
        # partition -> the highest epoch this process serialised a record in (kept when the
        # partition is dropped): a record still in flight when its partition was lost may land
        # after a restore by this same process, so the new chain starts above it.
        self.epochs_written: dict[int, int] = {}

    # ------------------------------------------------------------------ shards
    def restored(self, partition: int, max_epoch: int) -> None:
        """A shard was restored; its next record is a base in an epoch above every one seen,
        and above every one this process wrote (a late record of it then ranks below)."""
        self.chains[partition] = ShardChain(max(max_epoch, self.epochs_written.get(partition, 0)))

    def drop(self, partition: int) -> None:
        for d in (self.checkpointed_at, self.checkpointed_offset, self.chains):
            d.pop(partition, None)
        pc = self.pending
        if pc is not None:  # the round's record of the shard dropped is never produced (or waited for)
            pc.blobs.pop(partition, None)
            pc.sent.discard(partition)

    def _serialise(self, p: int, shard: Any) -> tuple[bytes, bytes]:
        """Step 1 for one shard: ``(key, record)``, a delta where the chain allows one, else a base."""
        s = self.w.settings
        ch = self.chains.setdefault(p, ShardChain(0))
        record = ch.next_record(shard, self.w._checkpoint_key(p), self.w.topic, self.owner, s.checkpoint_deltas,
                                s.checkpoint_delta_max_chain)
        self.epochs_written[p] = max(self.epochs_written.get(p, 0), ch.epoch)
        return record

    def _broken(self, partitions: Any) -> None:
        for p in partitions:
            ch = self.chains.get(p)
            if ch is not None:
                ch.broken = True

    # ------------------------------------------------------------------ synchronous (revoke, SIGTERM)
    def checkpoint(self, partitions: list[int] | None = None, commit_sync: bool = False) -> int:
        """Flush outputs, write one checkpoint record per changed shard, commit offsets.

        Returns the number of checkpoint records written. Raises BrokerError if a
        checkpoint could not be written (the shard is then checkpointed next time).
        """
        from confluent_kafka import TopicPartition

        w = self.w
        t0 = time.perf_counter()
        parts = sorted(w.shards if partitions is None else partitions)
        # Outputs first: a checkpoint must never claim offsets whose outputs could be lost.
        remaining = w.producer.flush(30)
        for _ in range(3):  # failed outputs are produced again; the checkpoint waits for them
            if not w.deliveries.retry:
                break
            w.metrics.output_retries.inc(w.deliveries.retry_failed(w.producer))
            remaining = w.producer.flush(30)
        if remaining or w.deliveries.retry:
            raise BrokerError(f"{remaining + len(w.deliveries.retry)} output records not delivered; "
                              "checkpoint postponed")
        # Everything produced is now acknowledged: let a periodic round in progress finish
        # (its records are produced now and acknowledged by the flush), or give way.
        self.advance()
        if self.pending is not None and self.pending.produced:
            w.producer.flush(30)
            self.advance()
        if self.pending is not None:
            self._broken(self.pending.blobs)  # its records' fate is unknown: the chains restart
            self.pending = None
            w.deliveries.release()
        written = 0
        commits = []
        now = time.time()
        results: dict[int, Any] = {}
        pending: dict[int, int] = {}
        for p in parts:
            shard = w.shards.get(p)
            if shard is None:
                continue
            if shard.next_offset == self.checkpointed_offset.get(p) and p in self.checkpointed_at:
                self.checkpointed_at[p] = now  # nothing new: the stored checkpoint is current
                continue

            def delivered(err: Any, msg: Any, p: int = p) -> None:
                results[p] = err

            if self._produce(p, *self._serialise(p, shard), delivered):
                pending[p] = shard.next_offset
        if pending:
            w.producer.flush(30)
        failed = []
        for p, offset in pending.items():
            if p not in results or results[p] is not None:
                failed.append((p, results.get(p, "no delivery report")))
                continue
            self.checkpointed_offset[p] = offset
            self.checkpointed_at[p] = now
            commits.append(TopicPartition(w.topic, p, offset))
            written += 1
        self._broken(p for p, _ in failed)
        self._commit(commits, asynchronous=not commit_sync)
        w.metrics.checkpoints.inc(written)
        w.metrics.checkpoint_seconds.observe(time.perf_counter() - t0)
        if failed:
            p, err = failed[0]
            raise BrokerError.from_kafka_error(f"checkpoint of partition(s) {[f[0] for f in failed]} not written", err)
        return written

    def _commit(self, commits: list, asynchronous: bool) -> None:
        if commits:
            try:
                self.w.consumer.commit(offsets=commits, asynchronous=asynchronous)
            except Exception as exc:  # commits are advisory (lag); the checkpoint is the truth
                log.warning("offset commit failed", extra={"error": str(exc)})

    def _produce(self, p: int, key: bytes, blob: bytes, delivered: Any) -> bool:
        """Produce one checkpoint record; False (counted, logged, chain broken) if it is refused.

        A record above the state topic's max.message.bytes would fail (librdkafka raises
        MSG_SIZE_TOO_LARGE): it is refused here instead, the worker keeps serving from
        memory, and a restart replays from the last checkpoint that was written. The
        shard is not tried again for :data:`REFUSED_RETRY_S` (serialising costs).
        """
        w = self.w
        if DELTA_KEY_INFIX not in key:  # the full size (a base) is what the limit alert watches
            w.metrics.state_bytes.labels(str(p)).set(len(blob))
        if len(blob) > w.checkpoint_limit:
            w.metrics.checkpoints_refused.labels("oversized").inc()
            self.refused_until[p] = time.monotonic() + REFUSED_RETRY_S
            self._broken((p,))
            log.error("checkpoint refused: larger than the state topic's max.message.bytes; serving from memory "
                      "(a restart replays from the last written checkpoint)",
                      extra={"partition": p, "bytes": len(blob), "limit": w.checkpoint_limit})
            return False
        try:
            # Each shard writes to its own state partition, so every partition's batch in
            # the request holds one record (keeps Tansu's listed high watermark exact).
            kf.produce(w.producer, w.settings.state_topic, blob, key=key, partition=p, on_delivery=delivered)
            w.metrics.checkpoint_bytes.inc(len(blob))
        except Exception as exc:  # KafkaException: a local refusal must not kill the worker
            w.metrics.checkpoints_refused.labels("produce_error").inc()
            self.refused_until[p] = time.monotonic() + REFUSED_RETRY_S
            self._broken((p,))
            log.error("checkpoint refused by the producer; serving from memory",
                      extra={"partition": p, "bytes": len(blob), "error": str(exc)[:200]})
            return False
        return True

    # ------------------------------------------------------------------ periodic
    def begin(self) -> bool:
        """Start a periodic checkpoint without blocking the loop; False if one is in progress.

        The records are serialised now (the state as of each shard's ``next_offset``),
        but produced only once every output produced before this moment has been
        acknowledged (:class:`~lola.stream.kafka.DeliveryTracker`), which is the same
        guarantee as ``flush()`` before a checkpoint, without stopping decisions while
        the broker answers. :meth:`advance` moves it on from the loop.
        """
        w = self.w
        if self.pending is not None:
            return False
        now = time.time()
        if w.deliveries.retry:  # produce failed outputs again first: this checkpoint waits for them
            w.metrics.output_retries.inc(w.deliveries.retry_failed(w.producer))
        blobs: dict[int, tuple[bytes, bytes, int]] = {}
        mono = time.monotonic()
        for p, shard in w.shards.items():
            if shard.next_offset == self.checkpointed_offset.get(p) and p in self.checkpointed_at:
                self.checkpointed_at[p] = now  # nothing new: the stored checkpoint is current
                continue
            if self.refused_until.get(p, 0.0) > mono:
                continue
            blobs[p] = (*self._serialise(p, shard), shard.next_offset)
        if not blobs:
            return False
        w.deliveries.barrier()
        self.pending = PendingCheckpoint(blobs, time.perf_counter(), now)
        self.advance()
        return True

    def advance(self) -> None:
        """Produce the pending checkpoint once its barrier clears; finish it once delivered."""
        from confluent_kafka import TopicPartition

        w = self.w
        pc = self.pending
        if pc is None:
            return
        if not pc.produced:
            if not w.deliveries.cleared():
                if time.perf_counter() - pc.started > CHECKPOINT_TIMEOUT_S:
                    self._abandon(f"outputs still unacknowledged after {CHECKPOINT_TIMEOUT_S:.0f}s "
                                  f"({w.deliveries.outstanding} in flight)")
                return
            if w.deliveries.barrier_failed:
                self._abandon(f"{len(w.deliveries.retry)} output(s) failed delivery; "
                              "producing them again before the next checkpoint")
                return
            w.deliveries.release()
            for p, (key, blob, _) in pc.blobs.items():
                if p not in w.shards:
                    continue  # revoked meanwhile: its revoke checkpoint superseded this one

                def delivered(err: Any, msg: Any, p: int = p) -> None:
                    pc.results[p] = err

                if self._produce(p, key, blob, delivered):
                    pc.sent.add(p)
            pc.produced = True
        if len(pc.results) < len(pc.sent):
            if time.perf_counter() - pc.started > CHECKPOINT_TIMEOUT_S:
                self._abandon(f"checkpoint records not acknowledged after {CHECKPOINT_TIMEOUT_S:.0f}s")
            return
        self.pending = None
        commits, failed = [], []
        for p in sorted(pc.sent):
            err = pc.results[p]
            if err is not None:
                failed.append((p, err))
                continue
            offset = pc.blobs[p][2]
            if p in w.shards and offset >= self.checkpointed_offset.get(p, -1):
                self.checkpointed_offset[p] = offset
                self.checkpointed_at[p] = pc.created
                commits.append(TopicPartition(w.topic, p, offset))
        self._broken(p for p, _ in failed)
        self._commit(commits, asynchronous=True)
        w.metrics.checkpoints.inc(len(commits))
        w.metrics.checkpoint_seconds.observe(time.perf_counter() - pc.started)
        if failed:
            err = BrokerError.from_kafka_error(f"checkpoint of partition(s) {[p for p, _ in failed]} not written",
                                               failed[0][1])
            log.error("checkpoint failed; will retry", extra={"error": str(err)})

    def _abandon(self, why: str) -> None:
        # The next interval serialises a newer state and tries again (a new base: this
        # round's records may or may not be on the log); a crash meanwhile just replays
        # from the older checkpoint.
        if self.pending is not None:
            self._broken(self.pending.blobs)
        self.pending = None
        self.w.deliveries.release()
        self.w.metrics.produce_errors.inc()
        log.error("checkpoint abandoned; will retry", extra={"error": why})
