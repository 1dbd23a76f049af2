"""Thin confluent-kafka wrappers: client configs, topic creation, dead letters, checkpoints.

Everything that decides *what* to do with an event lives in the pure modules
(:mod:`lola.stream.events`, :mod:`lola.stream.processor`); this module only moves
bytes. Kafka errors become :class:`lola.errors.BrokerError` with librdkafka's code.

Tansu notes (measured against the bundled v0.6.0-510f3e2 build; see README):

* ``ListOffsets`` (``get_watermark_offsets(cached=False)``) reports the base offset of
  the partition's last record batch + 1, not the log end, when that batch holds
  several records; Fetch responses carry the right high watermark. So nothing here
  trusts a listed high watermark to find "the end": readers stop at
  ``PARTITION_EOF`` (from Fetch), and checkpoints are written one record per
  produce request so the listed offset is exact for the state topic.
* ``cleanup.policy=compact`` is accepted and reported back, but memory storage
  never compacts. Readers therefore always take the *latest* record per key, which
  is also what compaction would leave.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, Callable, Iterable

from lola.errors import BrokerError, ConfigError
from lola.stream.shard import DeadLetter

log = logging.getLogger("lola.stream.kafka")

#: Same partitioner as the Java client (murmur2), so an experiment_id keyed by an ad
#: server written in Java lands on the partition our tools and workers expect.
PARTITIONER = "murmur2_random"

H_REASON = "lola.reason"
H_DETAIL = "lola.detail"
H_TOPIC = "lola.source.topic"
H_PARTITION = "lola.source.partition"
H_OFFSET = "lola.source.offset"


#: The largest record the worker's producer sends (librdkafka ``message.max.bytes``); a
#: checkpoint is capped by it as well as by the state topic's own limit.
PRODUCER_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def producer_config(settings: Any, **extra: Any) -> dict[str, Any]:
    # compression: LOLA_COMPRESSION (default gzip, which every Kafka client reads; docs/clients.md).
    conf = {**settings.kafka_config(), "partitioner": PARTITIONER, "linger.ms": settings.producer_linger_ms,
            "compression.type": settings.compression,
            "batch.num.messages": 10_000, "queue.buffering.max.messages": 1_000_000,
            "message.max.bytes": PRODUCER_MAX_MESSAGE_BYTES}
    conf.update(extra)
    return conf


def consumer_config(settings: Any, group_id: str | None = None, **extra: Any) -> dict[str, Any]:
    # Fetch settings: large fetches and a short broker wait. Tansu does not end a
    # long poll when data arrives, so fetch.wait.max.ms is added to every hop's latency
    # (measured: 1 ms -> ~3 ms end to end, 20 -> ~12, 100 -> ~52); 0 returned no data.
    # With a backlog fetches return at once, so a short wait costs no throughput.
    conf = {**settings.kafka_config(), "group.id": group_id or settings.group_id,
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest", "fetch.wait.max.ms": settings.fetch_wait_max_ms,
            "fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 33_554_432,
            "queued.max.messages.kbytes": 262_144}
    conf.update(extra)
    return conf


def raise_on(err: Any, what: str) -> None:
    if err is not None:
        raise BrokerError.from_kafka_error(what, err)


def admin_client(settings: Any) -> Any:
    """An AdminClient; a bad pass-through property (LOLA_KAFKA_*) is a ConfigError, not a traceback."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        return AdminClient(settings.kafka_config())
    except (KafkaException, ValueError, TypeError) as exc:
        raise ConfigError(f"Kafka client settings rejected by librdkafka: {exc}") from None


def ensure_topics(settings: Any, timeout_s: float = 20.0) -> dict[str, int]:
    """Create the worker's topics if missing; check the co-partitioning rule.

    Events, decisions, snapshots and state all get the events topic's partition
    count (state/snapshots compacted). Returns ``{topic: partitions}``.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic

    admin = admin_client(settings)
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise BrokerError.from_kafka_error(f"cannot reach broker {settings.bootstrap_servers}", exc.args[0]) from None
    events_partitions = len(existing[settings.events_topic].partitions) if settings.events_topic in existing \
        else settings.partitions
    compact = {"cleanup.policy": "compact"}
    # A checkpoint is one record holding a shard's whole state and dedup window: allow
    # records far above Kafka's 1 MB default on the state topic (topic-level override).
    state = {**compact, "max.message.bytes": str(settings.state_max_message_bytes)}
    wanted = {settings.events_topic: {}, settings.decisions_topic: {}, settings.deadletter_topic: {},
              settings.snapshots_topic: compact, settings.state_topic: state, settings.inflight_topic: compact}
    missing = [NewTopic(name, events_partitions, settings.replication_factor, config=cfg)
               for name, cfg in wanted.items() if name not in existing]
    if missing:
        if not settings.create_topics:
            raise ConfigError(f"topic(s) missing and LOLA_CREATE_TOPICS is false: {[t.topic for t in missing]}")
        for name, fut in admin.create_topics(missing, request_timeout=timeout_s).items():
            try:
                fut.result(timeout_s)
            except KafkaException as exc:
                err = exc.args[0]
                if getattr(err, "name", lambda: "")() != "TOPIC_ALREADY_EXISTS":
                    raise BrokerError.from_kafka_error(f"cannot create topic {name}", err) from None
    topics = admin.list_topics(timeout=timeout_s).topics
    counts = {name: len(topics[name].partitions) for name in wanted if name in topics}
    if counts.get(settings.state_topic, 0) < events_partitions:
        raise ConfigError(f"state topic {settings.state_topic} has {counts.get(settings.state_topic)} partitions; "
                          f"it needs at least the {events_partitions} of {settings.events_topic}")
    return counts


def topic_max_message_bytes(settings: Any, topic: str, timeout_s: float = 10.0) -> int | None:
    """The topic's ``max.message.bytes`` as the broker reports it (DescribeConfigs), or None
    if the broker cannot say (the caller then documents its fallback)."""
    from confluent_kafka.admin import ConfigResource

    admin = admin_client(settings)
    try:
        futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)],
                                         request_timeout=timeout_s)
        for fut in futures.values():
            entry = fut.result(timeout_s).get("max.message.bytes")
            if entry is not None and entry.value is not None and str(entry.value).isdigit():
                return int(entry.value)
    except Exception as exc:  # KafkaException, a broker without DescribeConfigs, a timeout
        log.warning("cannot read max.message.bytes of %s", topic, extra={"error": str(exc)[:200]})
    return None


class DeliveryTracker:
    """Sequence numbers for produced outputs, so a checkpoint waits for exactly its predecessors.

    A checkpoint at input offset X may be written only once every output produced for
    the records before X has been acknowledged. ``producer.flush()`` guarantees that,
    but blocks the allocation loop (and so every decision) for a broker round trip or
    more. Instead each output's delivery callback is wrapped by :meth:`track`; a
    :meth:`barrier` records how many outputs are still unacknowledged at that moment,
    and :meth:`cleared` is true once all of those, and only those, have been reported
    (librdkafka does not report in produce order across partitions, so a plain count
    of deliveries would not do). One barrier at a time; pure Python, no broker.
    """

    __slots__ = ("produced", "delivered", "failed", "retry", "_barrier", "_left", "_barrier_failed")

    def __init__(self) -> None:
        self.produced = 0
        self.delivered = 0
        self.failed = 0
        #: Outputs whose delivery failed, to produce again: (topic, value, key, headers, callback).
        self.retry: list[tuple[str, bytes | None, bytes | None, Any, Any]] = []
        self._barrier: int | None = None
        self._left = 0
        self._barrier_failed = False

    def track(self, callback: Callable[[Any, Any], None] | None = None) -> Callable[[Any, Any], None]:
        """A delivery callback for the next produced output (calls ``callback`` too)."""
        seq = self.produced
        self.produced += 1
        return functools.partial(self._done, seq, callback)

    def _done(self, seq: int, callback: Any, err: Any, msg: Any) -> None:
        self.delivered += 1
        if self._barrier is not None and seq < self._barrier:
            self._left -= 1
            if err is not None:
                self._barrier_failed = True
        if err is not None:
            # Never counted as acknowledged: kept to be produced again (retry_failed), and a
            # checkpoint waiting on it gives way (barrier_failed) instead of advancing.
            self.failed += 1
            if msg is not None:
                self.retry.append((msg.topic(), msg.value(), msg.key(), msg.headers(), callback))
        if callback is not None:
            callback(err, msg)

    def produce(self, producer: Any, topic: str, value: bytes | None, key: bytes | None = None,
                callback: Callable[[Any, Any], None] | None = None, **kw: Any) -> None:
        """:func:`produce` with a tracked callback; a produce that raises is no longer awaited."""
        on_delivery = self.track(callback)
        try:
            produce(producer, topic, value, key=key, on_delivery=on_delivery, **kw)
        except BaseException as exc:
            # never sent: not awaited, but a failure (never reported as delivered)
            on_delivery.func(on_delivery.args[0], None, exc, None)
            raise

    def retry_failed(self, producer: Any) -> int:
        """Produce every failed output again (tracked); returns how many."""
        todo, self.retry = self.retry, []
        for topic, value, key, headers, callback in todo:
            self.produce(producer, topic, value, key=key, callback=callback, headers=headers)
        return len(todo)

    def barrier(self) -> None:
        """Wait (via :meth:`cleared`) for every output tracked so far."""
        # Every delivery so far had seq < produced, so the rest are exactly the unreported ones.
        self._barrier = self.produced
        self._left = self.produced - self.delivered
        self._barrier_failed = False

    def cleared(self) -> bool:
        return self._barrier is None or self._left <= 0

    @property
    def barrier_failed(self) -> bool:
        """True if an output the barrier waits for was reported as failed."""
        return self._barrier_failed

    def release(self) -> None:
        self._barrier = None
        self._left = 0
        self._barrier_failed = False

    @property
    def outstanding(self) -> int:
        return self.produced - self.delivered


class KafkaDeadLetterPolicy:
    """Publish the original bytes to the dead-letter topic with reason/source headers."""

    def __init__(self, producer: Any, topic: str, tracker: DeliveryTracker, on_error: Any = None) -> None:
        self.producer = producer
        self.topic = topic
        self._on_error = on_error
        self._tracker = tracker  # the worker's: a checkpoint waits for its dead letters too

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            log.error("dead letter not delivered", extra={"error": str(err)})
            if self._on_error:
                self._on_error(err)

    def handle(self, source_topic: str, partition: int, letter: DeadLetter) -> None:
        headers = [(H_REASON, letter.reason.encode()), (H_DETAIL, letter.detail.encode("utf-8", "replace")[:500]),
                   (H_TOPIC, source_topic.encode()), (H_PARTITION, str(partition).encode()),
                   (H_OFFSET, str(letter.offset).encode())]
        self._tracker.produce(self.producer, self.topic, letter.value, key=letter.key,
                              callback=self._delivered, headers=headers)


def produce(producer: Any, topic: str, value: bytes | None, key: bytes | None = None, **kw: Any) -> None:
    """``producer.produce`` that waits (serving delivery reports) while the local queue is full."""
    while True:
        try:
            producer.produce(topic, value, key, **kw)
            return
        except BufferError:
            producer.poll(0.05)


def watermarks(conf: dict[str, Any], topic: str, partition: int, must_exist: bool = True,
               timeout_s: float = 10.0) -> tuple[int, int] | None:
    """``(low, high)`` of one partition as the broker lists it now (a short-lived probe consumer).

    With ``must_exist=False`` a topic or partition that does not exist gives None instead of
    an error. Raises BrokerError when the broker cannot answer.
    """
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer(conf)
    try:
        if not must_exist:
            meta = probe.list_topics(topic, timeout=timeout_s).topics.get(topic)
            if meta is None or meta.error is not None or partition not in meta.partitions:
                return None
        return probe.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s, cached=False)
    except Exception as exc:  # KafkaException
        raise BrokerError.from_kafka_error(f"cannot list {topic}[{partition}] offsets",
                                           exc.args[0] if exc.args else exc) from None
    finally:
        probe.close()


def read_partition_to_end(conf: dict[str, Any], topic: str, partition: int, start: int,
                          timeout_s: float = 30.0) -> Iterable[Any]:
    """Yield messages of one partition from ``start`` until Fetch reports its end."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({**conf, "enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() > deadline:
                raise BrokerError(f"reading {topic}[{partition}] did not reach its end within {timeout_s:.0f}s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    return
                raise BrokerError.from_kafka_error(f"reading {topic}[{partition}]", err)
            yield msg
    finally:
        consumer.close()


def read_topic_latest(conf: dict[str, Any], topic: str, timeout_s: float = 30.0) -> dict[bytes, Any]:
    """The latest message per key of a whole (compacted) topic: what compaction keeps."""
    from confluent_kafka import Consumer, KafkaException

    admin_consumer = Consumer({**conf, "enable.partition.eof": True})
    try:
        md = admin_consumer.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerError.from_kafka_error(f"cannot read metadata of {topic}", exc.args[0]) from None
    finally:
        admin_consumer.close()
    tmeta = md.topics.get(topic)
    if tmeta is None or tmeta.error is not None:
        raise BrokerError.from_kafka_error(f"topic {topic} not available", tmeta.error if tmeta else None) \
            if tmeta is not None and tmeta.error is not None else BrokerError(f"topic {topic} does not exist")
    latest: dict[bytes, Any] = {}
    for p in sorted(tmeta.partitions):
        for msg in read_partition_to_end(conf, topic, p, 0, timeout_s):
            latest[msg.key()] = msg
    return latest
