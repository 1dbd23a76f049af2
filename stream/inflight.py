"""Kafka side of the crash-loop breaker (:mod:`lola.stream.breaker` holds the logic), and
the worker's guarded apply loop (:class:`GuardedApplyMixin`).

One compacted topic (``settings.inflight_topic``, default ``lola.inflight.<group>``)
with one marker record per events partition, written to the same partition number
by its owner before it applies records. A dedicated producer (no linger) is flushed
after each marker, so the marker is on the broker before the records are applied;
the worker's output producer is never flushed on the hot path.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from lola.errors import ConfigError
from lola.stream import kafka as kf
from lola.stream.processor import ShardProcessor
from lola.stream.shard import BatchOutput, DeadLetter

log = logging.getLogger("lola.stream.inflight")
wlog = logging.getLogger("lola.stream.worker")

#: Records at the tail of an in-flight partition examined on restore (one writer per
#: partition writes one record per request, so the latest marker is the last record).
MARKER_TAIL = 8
#: How long the worker waits for a marker's acknowledgement before applying anyway.
MARKER_TIMEOUT_S = 10.0


class InflightMarkers:
    """Durable in-flight markers of one worker (see module docstring)."""

    def __init__(self, settings: Any, client_id: str, on_failure: Any = None) -> None:
        from confluent_kafka import Producer

        self.settings = settings
        self.topic = settings.inflight_topic
        self._on_failure = on_failure or (lambda: None)
        self.producer = Producer(kf.producer_config(settings, **{"client.id": f"{client_id}-inflight",
                                                                 "linger.ms": 0, "compression.type": "none"}))

    def key(self, partition: int) -> bytes:
        s = self.settings
        return f"{s.group_id}:{s.events_topic}:{partition}".encode()

    def read(self, partition: int) -> bytes | None:
        """The latest marker of ``partition`` (None: never written)."""
        conf = kf.consumer_config(self.settings, f"{self.settings.group_id}.restore")
        low, high = kf.watermarks(conf, self.topic, partition)
        latest = None
        want = self.key(partition)
        if high > low:
            for msg in kf.read_partition_to_end(conf, self.topic, partition, max(low, high - MARKER_TAIL)):
                if msg.key() == want:
                    latest = msg.value()
        return latest

    def write(self, markers: dict[int, bytes], wait: bool = True) -> bool:
        """Write one marker per partition and (``wait``) for the acknowledgements.

        False (logged, counted by ``on_failure``) if any was not acknowledged: the
        caller applies anyway, that batch is then not protected by the breaker.
        """
        results: dict[int, Any] = {}
        for p, value in markers.items():
            def delivered(err: Any, msg: Any, p: int = p) -> None:
                results[p] = err

            try:
                kf.produce(self.producer, self.topic, value, key=self.key(p), partition=p, on_delivery=delivered)
            except Exception as exc:  # KafkaException: a local error must not stop the partition
                results[p] = exc
        if not wait:
            self.producer.poll(0)
            return True
        self.producer.flush(MARKER_TIMEOUT_S)
        bad = {p: results.get(p, "not acknowledged") for p in markers if results.get(p, "x") is not None}
        if bad:
            self._on_failure()
            log.error("in-flight marker not written; applying without crash-loop protection",
                      extra={"partitions": sorted(bad), "error": str(next(iter(bad.values())))[:200]})
            return False
        return True

    def close(self) -> None:
        self.producer.flush(5)


class GuardedApplyMixin:
    """The Worker's apply step: records behind in-flight markers, poison records
    dead-lettered, offsets beyond a partition's end reset by policy. A mixin of
    :class:`lola.stream.worker.Worker` (uses its shards, breakers, markers, consumer)."""

    def _clear_markers(self, partitions: list[int]) -> None:
        """Nothing in flight any more (clean revoke or shutdown); suspects are kept."""
        markers = {p: self.breakers[p].marker(None, None, self.worker_id) for p in partitions if p in self.breakers}
        if markers:
            self.markers.write(markers)

    def _apply(self, by_partition: dict[int, tuple[list, list]]) -> list[BatchOutput]:
        """Apply consumed records behind durable in-flight markers (the crash-loop breaker).

        Normally every partition's batch is marked in one write (one round trip per
        consumed batch); a death then makes each of those batches a suspect (one death
        for each of their records). Records of a suspect range are applied alone, each
        behind its own marker written together with the "nothing in flight" marker of
        the partition applied before, so a later death is charged to that one record.
        """
        plans: dict[int, list] = {}
        for p, (records, stamps) in by_partition.items():
            shard = self.shards.get(p)
            if shard is None:
                continue  # revoked while the batch was in flight
            if records[0][0] < shard.next_offset and not self._offset_reset(p, shard, records[0][0]):
                continue
            breaker = self.breakers[p]
            chunks = [(c, s) for c, s in breaker.chunks(records, stamps) if c[-1][0] >= shard.next_offset]
            if not chunks:
                continue
            plans[p] = chunks
        outs = []
        done: dict[int, bytes] = {}
        breaker_on = self.settings.crash_breaker
        if breaker_on and all(not self.breakers[p].suspects for p in plans):
            # the common case, no suspects (so one whole chunk per partition, a one-record
            # batch included): one round trip marks every partition's batch
            self.markers.write({p: self.breakers[p].marker(chunks[0][0][0][0], chunks[0][0][-1][0], self.worker_id)
                                for p, chunks in plans.items()})
            marked = True
        else:
            marked = False
        for p, chunks in plans.items():
            shard, breaker = self.shards[p], self.breakers[p]
            for i, (chunk, stamps) in enumerate(chunks):
                deaths = breaker.poison_deaths(chunk[0][0]) if len(chunk) == 1 else None
                if deaths is not None:
                    offset, key, value = chunk[0]
                    shard.skip(offset)
                    wlog.error("poison record dead-lettered by the crash-loop breaker",
                              extra={"partition": p, "offset": offset, "deaths": deaths})
                    out = BatchOutput(dead_letters=[DeadLetter(offset, key, value, "poison",
                                                               f"process died {deaths} times with it in flight")])
                else:
                    if breaker_on and not marked:
                        done[p] = breaker.marker(chunk[0][0], chunk[-1][0], self.worker_id)
                        self.markers.write(done)
                        done = {}
                    if self._crash_token is not None and any(self._crash_token in (v or b"") for _, _, v in chunk):
                        os._exit(70)  # TEST ONLY (see TEST_CRASH_ENV): dies like a segfault would
                    rollbacks = shard.rollbacks
                    out = shard.process(chunk, timestamps=stamps)
                    if shard.rollbacks != rollbacks:
                        self.metrics.rollbacks.inc()
                breaker.passed(shard.next_offset)
                self._emit(p, out)
                outs.append(out)
            if breaker_on:
                done[p] = breaker.marker(None, None, self.worker_id)
        if done:
            self.markers.write(done, wait=False)  # delivered with the next marker at the latest
        return outs

    def _events_end(self, p: int, next_offset: int) -> tuple[int, int] | None:
        """(low, end) of events partition ``p`` if ``next_offset`` lies beyond its end, else None.

        Tansu lists the base offset of the last record batch + 1 as the high watermark,
        which can be below the true end; so only a checkpoint above the listed value is
        checked, by reading the last batch (Fetch reports the true end).
        """
        conf = kf.consumer_config(self.settings, f"{self.settings.group_id}.restore")
        low, high = kf.watermarks(conf, self.topic, p)
        if next_offset <= high:
            return None
        end = high
        if high > low:
            for msg in kf.read_partition_to_end(conf, self.topic, p, max(low, high - 1)):
                end = max(end, msg.offset() + 1)
        return (low, end) if next_offset > end else None

    def _offset_reset(self, p: int, shard: ShardProcessor, offset: int, end: int | None = None) -> bool:
        """The checkpoint lies beyond the partition's end (topic deleted and recreated, or
        truncated): found at assignment (``offset`` = low watermark, ``end`` given) or when
        records below the checkpoint arrive (the consumer was reset). Apply
        ``offset_reset_policy``; True if records from ``offset`` are to be applied."""
        from confluent_kafka import TopicPartition

        policy = self.settings.offset_reset_policy
        self.metrics.offset_resets.labels(policy).inc()
        wlog.error("checkpoint offset is beyond the partition's end (topic recreated?)",
                  extra={"partition": p, "checkpoint_offset": shard.next_offset, "first_offset": offset,
                         "policy": policy})
        if policy == "fail":
            raise ConfigError(f"checkpoint of {self.topic}[{p}] is at offset {shard.next_offset}, beyond the "
                              f"partition's end (records from {offset}); offset_reset_policy is 'fail'")
        self.breakers[p].suspects = []  # offsets of the old log mean nothing now
        if policy == "earliest":
            shard.rewind(offset)  # keep the state (and its dedup window); count the new log
            return True
        if end is None:
            _, end = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            shard.rewind(max(end, offset))
            self.consumer.seek(TopicPartition(self.topic, p, shard.next_offset))
        else:
            shard.rewind(end)
        return False
