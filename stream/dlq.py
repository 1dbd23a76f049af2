"""``lola dlq replay``: re-publish dead letters to their source topic.

The source topic comes from the ``lola.source.topic`` header; the original key and
bytes are sent unchanged, so a fixed-up producer bug or a raised size limit lets the
worker take them. Replay reads the dead-letter topic from the start up to its end
at the time of the call (Fetch's end-of-partition, see :mod:`lola.stream.kafka`).
"""

from __future__ import annotations

from typing import Any

from lola.stream import kafka as kf


def replay_dead_letters(settings: Any, reasons: set[str], dry_run: bool = False) -> dict[str, Any]:
    from confluent_kafka import Consumer, Producer

    conf = kf.consumer_config(settings, "lola-dlq-replay")
    probe = Consumer(conf)
    try:
        md = probe.list_topics(settings.deadletter_topic, timeout=10).topics.get(settings.deadletter_topic)
    finally:
        probe.close()
    if md is None or md.error is not None:
        return {"read": 0, "replayed": 0, "by_reason": {}, "skipped": 0}
    producer = None if dry_run else Producer(kf.producer_config(settings))
    read = replayed = skipped = 0
    by_reason: dict[str, int] = {}
    for p in sorted(md.partitions):
        for msg in kf.read_partition_to_end(conf, settings.deadletter_topic, p, 0):
            read += 1
            headers = dict(msg.headers() or ())
            reason = (headers.get(kf.H_REASON) or b"").decode("utf-8", "replace")
            source = (headers.get(kf.H_TOPIC) or b"").decode("utf-8", "replace")
            if (reasons and reason not in reasons) or not source or msg.value() is None:
                skipped += 1
                continue
            by_reason[reason] = by_reason.get(reason, 0) + 1
            replayed += 1
            if producer is not None:
                kf.produce(producer, source, msg.value(), key=msg.key(),
                           headers=[("lola.replayed_from", f"{msg.topic()}:{msg.partition()}:{msg.offset()}".encode())])
    if producer is not None:
        producer.flush(30)
    return {"read": read, "replayed": replayed if not dry_run else 0, "would_replay": replayed,
            "by_reason": by_reason, "skipped": skipped, "dry_run": dry_run}
