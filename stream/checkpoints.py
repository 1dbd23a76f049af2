"""The worker's checkpoint half: periodic and synchronous checkpoints of its shards.

A mixin of :class:`lola.stream.worker.Worker` (it reads the worker's shards, producer,
consumer, delivery tracker and metrics); split out only to keep modules short. The
guarantees are in the worker's module docstring and docs/operations/fault-tolerance.md:
a checkpoint is written only after every output of the records it covers was
acknowledged, a failed output is produced again first, and a record above the state
topic's max.message.bytes is refused (metric + log), never produced.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from lola.errors import BrokerError
from lola.stream import kafka as kf

log = logging.getLogger("lola.stream.worker")

#: A periodic checkpoint not written within this is abandoned and retried with newer state.
CHECKPOINT_TIMEOUT_S = 30.0
#: Bytes kept free below max.message.bytes for the record's key, headers and batch framing.
RECORD_OVERHEAD_BYTES = 4096
#: After a refused checkpoint the shard is not serialised again for this long.
REFUSED_RETRY_S = 60.0


class PendingCheckpoint:
    """A periodic checkpoint between serialisation and acknowledgement."""

    __slots__ = ("blobs", "started", "created", "produced", "sent", "results")

    def __init__(self, blobs: dict[int, tuple[bytes, int]], started: float, created: float) -> None:
        self.blobs = blobs          # partition -> (record, the next input offset it reflects)
        self.started = started
        self.created = created
        self.produced = False
        self.sent: set[int] = set()
        self.results: dict[int, Any] = {}


class CheckpointMixin:
    """Checkpoint methods of the Worker (see module docstring)."""

    def checkpoint(self, partitions: list[int] | None = None, commit_sync: bool = False) -> int:
        """Flush outputs, write one checkpoint record per changed shard, commit offsets.

        Returns the number of checkpoint records written. Raises BrokerError if a
        checkpoint could not be written (the shard is then checkpointed next time).
        """
        from confluent_kafka import TopicPartition

        t0 = time.perf_counter()
        parts = sorted(self.shards if partitions is None else partitions)
        # Outputs first: a checkpoint must never claim offsets whose outputs could be lost.
        remaining = self.producer.flush(30)
        for _ in range(3):  # failed outputs are produced again; the checkpoint waits for them
            if not self.deliveries.retry:
                break
            self.metrics.output_retries.inc(self.deliveries.retry_failed(self.producer))
            remaining = self.producer.flush(30)
        if remaining or self.deliveries.retry:
            raise BrokerError(f"{remaining + len(self.deliveries.retry)} output records not delivered; "
                              "checkpoint postponed")
        # Everything produced is now acknowledged: let a periodic checkpoint in progress
        # finish (or give way: the records written below reflect at least as much input).
        self.advance_checkpoint()
        if self._pending is not None:
            self._pending = None
            self.deliveries.release()
        written = 0
        commits = []
        now = time.time()
        results: dict[int, Any] = {}
        pending: dict[int, int] = {}
        for p in parts:
            shard = self.shards.get(p)
            if shard is None:
                continue
            if shard.next_offset == self.checkpointed_offset.get(p) and p in self.checkpointed_at:
                self.checkpointed_at[p] = now  # nothing new: the stored checkpoint is current
                continue

            def delivered(err: Any, msg: Any, p: int = p) -> None:
                results[p] = err

            if self._produce_checkpoint(p, shard.mark(self.topic), delivered):
                pending[p] = shard.next_offset
        if pending:
            self.producer.flush(30)
        failed = []
        for p, offset in pending.items():
            if p not in results or results[p] is not None:
                failed.append((p, results.get(p, "no delivery report")))
                continue
            self.checkpointed_offset[p] = offset
            self.checkpointed_at[p] = now
            commits.append(TopicPartition(self.topic, p, offset))
            written += 1
        if commits:
            try:
                self.consumer.commit(offsets=commits, asynchronous=not commit_sync)
            except Exception as exc:  # commits are advisory (lag); the checkpoint is the truth
                log.warning("offset commit failed", extra={"error": str(exc)})
        self.metrics.checkpoints.inc(written)
        self.metrics.checkpoint_seconds.observe(time.perf_counter() - t0)
        if failed:
            p, err = failed[0]
            raise BrokerError.from_kafka_error(f"checkpoint of partition(s) {[f[0] for f in failed]} not written", err)
        return written

    def _produce_checkpoint(self, p: int, blob: bytes, delivered: Any) -> bool:
        """Produce one checkpoint record; False (counted, logged) if it is refused.

        A record above the state topic's max.message.bytes would fail (librdkafka raises
        MSG_SIZE_TOO_LARGE): it is refused here instead, the worker keeps serving from
        memory, and a restart replays from the last checkpoint that was written. The
        shard is not tried again for :data:`REFUSED_RETRY_S` (serialising costs).
        """
        self.metrics.state_bytes.labels(str(p)).set(len(blob))
        if len(blob) > self.checkpoint_limit:
            self.metrics.checkpoints_refused.labels("oversized").inc()
            self._refused_until[p] = time.monotonic() + REFUSED_RETRY_S
            log.error("checkpoint refused: larger than the state topic's max.message.bytes; serving from memory "
                      "(a restart replays from the last written checkpoint)",
                      extra={"partition": p, "bytes": len(blob), "limit": self.checkpoint_limit})
            return False
        try:
            # Each shard writes to its own state partition, so every partition's batch in
            # the request holds one record (keeps Tansu's listed high watermark exact).
            kf.produce(self.producer, self.settings.state_topic, blob, key=self._checkpoint_key(p), partition=p,
                       on_delivery=delivered)
            self.metrics.checkpoint_bytes.inc(len(blob))
        except Exception as exc:  # KafkaException: a local refusal must not kill the worker
            self.metrics.checkpoints_refused.labels("produce_error").inc()
            self._refused_until[p] = time.monotonic() + REFUSED_RETRY_S
            log.error("checkpoint refused by the producer; serving from memory",
                      extra={"partition": p, "bytes": len(blob), "error": str(exc)[:200]})
            return False
        return True

    def begin_checkpoint(self) -> bool:
        """Start a periodic checkpoint without blocking the loop; False if one is in progress.

        The records are serialised now (the state as of each shard's ``next_offset``),
        but produced only once every output produced before this moment has been
        acknowledged (:class:`~lola.stream.kafka.DeliveryTracker`), which is the same
        guarantee as ``flush()`` before a checkpoint, without stopping decisions while
        the broker answers. :meth:`advance_checkpoint` moves it on from the loop.
        """
        if self._pending is not None:
            return False
        now = time.time()
        if self.deliveries.retry:  # produce failed outputs again first: this checkpoint waits for them
            self.metrics.output_retries.inc(self.deliveries.retry_failed(self.producer))
        blobs: dict[int, tuple[bytes, int]] = {}
        mono = time.monotonic()
        for p, shard in self.shards.items():
            if shard.next_offset == self.checkpointed_offset.get(p) and p in self.checkpointed_at:
                self.checkpointed_at[p] = now  # nothing new: the stored checkpoint is current
                continue
            if self._refused_until.get(p, 0.0) > mono:
                continue
            blobs[p] = (shard.mark(self.topic), shard.next_offset)
        if not blobs:
            return False
        self.deliveries.barrier()
        self._pending = PendingCheckpoint(blobs, time.perf_counter(), now)
        self.advance_checkpoint()
        return True

    def advance_checkpoint(self) -> None:
        """Produce the pending checkpoint once its barrier clears; finish it once delivered."""
        from confluent_kafka import TopicPartition

        pc = self._pending
        if pc is None:
            return
        if not pc.produced:
            if not self.deliveries.cleared():
                if time.perf_counter() - pc.started > CHECKPOINT_TIMEOUT_S:
                    self._abandon_checkpoint(f"outputs still unacknowledged after {CHECKPOINT_TIMEOUT_S:.0f}s "
                                             f"({self.deliveries.outstanding} in flight)")
                return
            if self.deliveries.barrier_failed:
                self._abandon_checkpoint(f"{len(self.deliveries.retry)} output(s) failed delivery; "
                                         "producing them again before the next checkpoint")
                return
            self.deliveries.release()
            for p, (blob, _) in pc.blobs.items():
                if p not in self.shards:
                    continue  # revoked meanwhile: its revoke checkpoint superseded this one

                def delivered(err: Any, msg: Any, p: int = p) -> None:
                    pc.results[p] = err

                if self._produce_checkpoint(p, blob, delivered):
                    pc.sent.add(p)
            pc.produced = True
        if len(pc.results) < len(pc.sent):
            if time.perf_counter() - pc.started > CHECKPOINT_TIMEOUT_S:
                self._abandon_checkpoint(f"checkpoint records not acknowledged after {CHECKPOINT_TIMEOUT_S:.0f}s")
            return
        self._pending = None
        commits, failed = [], []
        for p in sorted(pc.sent):
            err = pc.results[p]
            if err is not None:
                failed.append((p, err))
                continue
            offset = pc.blobs[p][1]
            if p in self.shards and offset >= self.checkpointed_offset.get(p, -1):
                self.checkpointed_offset[p] = offset
                self.checkpointed_at[p] = pc.created
                commits.append(TopicPartition(self.topic, p, offset))
        if commits:
            try:
                self.consumer.commit(offsets=commits, asynchronous=True)
            except Exception as exc:  # commits are advisory (lag); the checkpoint is the truth
                log.warning("offset commit failed", extra={"error": str(exc)})
        self.metrics.checkpoints.inc(len(commits))
        self.metrics.checkpoint_seconds.observe(time.perf_counter() - pc.started)
        if failed:
            err = BrokerError.from_kafka_error(f"checkpoint of partition(s) {[p for p, _ in failed]} not written",
                                               failed[0][1])
            log.error("checkpoint failed; will retry", extra={"error": str(err)})

    def _abandon_checkpoint(self, why: str) -> None:
        # The next interval serialises a newer state and tries again; nothing is lost
        # meanwhile, a crash just replays from the older checkpoint.
        self._pending = None
        self.deliveries.release()
        self.metrics.produce_errors.inc()
        log.error("checkpoint abandoned; will retry", extra={"error": why})
