"""Kafka side of the crash-loop breaker (:mod:`lola.stream.breaker` holds the logic).

One compacted topic (``settings.inflight_topic``, default ``lola.inflight.<group>``)
with one marker record per events partition, written to the same partition number
by its owner before it applies records. A dedicated producer (no linger) is flushed
after each marker, so the marker is on the broker before the records are applied;
the worker's output producer is never flushed on the hot path.
"""

from __future__ import annotations

import logging
from typing import Any

from lola.errors import BrokerError
from lola.stream import kafka as kf

log = logging.getLogger("lola.stream.inflight")

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
        from confluent_kafka import Consumer, TopicPartition

        conf = kf.consumer_config(self.settings, f"{self.settings.group_id}.restore")
        probe = Consumer(conf)
        try:
            low, high = probe.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=10, cached=False)
        except Exception as exc:  # KafkaException
            raise BrokerError.from_kafka_error("cannot list in-flight topic offsets",
                                               exc.args[0] if exc.args else exc) from None
        finally:
            probe.close()
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
