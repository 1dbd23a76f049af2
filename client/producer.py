"""``EventProducer``: confluent-kafka producer with the worker's keying, batching and delivery reports."""

from __future__ import annotations

import logging
import weakref
from typing import Any, Callable

from lola.client.events import encode
from lola.errors import BrokerError
from lola.stream import events as ev
from lola.stream import kafka as kf
from lola.stream.settings import StreamSettings

log = logging.getLogger("lola.client")

#: ``on_delivery(error, event)``: error is None once the broker acknowledged the event.
DeliveryCallback = Callable[[Any, ev.Event], None]


def _flush_at_exit(producer: Any, timeout_s: float) -> None:
    left = producer.flush(timeout_s)
    if left:
        log.error("events not delivered at exit", extra={"undelivered": left})


class EventProducer:
    """Send events to the worker's events topic.

    * key = ``experiment_id``, partitioner ``murmur2_random`` (the Java client's), so
      events reach the worker that owns their experiment (:data:`lola.stream.kafka.PARTITIONER`);
    * batching: librdkafka's (``linger_ms``, default 5 ms, up to 10,000 records per batch);
      :meth:`send` never blocks unless the local queue is full;
    * delivery: ``on_delivery(error, event)`` for every event, counts in :attr:`delivered`
      and :attr:`failed`;
    * flush on exit: :meth:`close` (and leaving a ``with`` block) flushes and raises
      :class:`~lola.errors.BrokerError` if events were left undelivered; a producer never
      closed is flushed at interpreter exit.

    Connection settings come from ``settings``, or from the environment and
    ``overrides`` exactly as for the worker (``KAFKA_BOOTSTRAP_SERVERS``, ``LOLA_KAFKA_*``...).
    """

    def __init__(self, bootstrap: str | None = None, settings: StreamSettings | None = None,
                 on_delivery: DeliveryCallback | None = None, linger_ms: float = 5.0,
                 close_timeout_s: float = 30.0, **overrides: Any) -> None:
        from confluent_kafka import Producer

        self.settings = settings or StreamSettings.load(bootstrap_servers=bootstrap, **overrides)
        self.settings.require_bootstrap()
        self.topic = self.settings.events_topic
        self._on_delivery = on_delivery
        self.close_timeout_s = close_timeout_s
        self.sent = self.delivered = self.failed = 0
        self._producer = Producer(kf.producer_config(self.settings, **{"linger.ms": linger_ms}))
        self._finalizer = weakref.finalize(self, _flush_at_exit, self._producer, close_timeout_s)

    def _report(self, event: ev.Event, err: Any, msg: Any) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1
            log.error("event not delivered", extra={"error": str(err), "experiment_id": event.experiment_id})
        if self._on_delivery is not None:
            self._on_delivery(err, event)

    def send(self, event: ev.Event) -> None:
        """Queue one event (validated first: EventError where the worker would dead-letter it)."""
        key, value = encode(event, self.settings.max_message_bytes)
        kf.produce(self._producer, self.topic, value, key=key,
                   on_delivery=lambda err, msg: self._report(event, err, msg))
        self.sent += 1
        self._producer.poll(0)  # serve delivery reports of earlier sends

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait for outstanding deliveries; returns how many are still outstanding."""
        return self._producer.flush(self.close_timeout_s if timeout_s is None else timeout_s)

    def close(self) -> None:
        """Flush; BrokerError if events are still undelivered or some failed."""
        if not self._finalizer.alive:
            return
        self._finalizer.detach()
        left = self.flush()
        if left or self.failed:
            raise BrokerError(f"{left} event(s) undelivered after {self.close_timeout_s:.0f}s, "
                              f"{self.failed} failed (of {self.sent})")

    def __enter__(self) -> "EventProducer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
