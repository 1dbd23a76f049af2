"""``lola.client``: produce events to, and read snapshots from, a lola-stream deployment.

>>> from lola.client import EventProducer, SnapshotReader, variant, decision_request
>>> with EventProducer(bootstrap="localhost:9092") as producer:      # doctest: +SKIP
...     producer.send(variant("exp-1", "a", "A headline"))
...     producer.send(decision_request("req-1", "exp-1"))
>>> SnapshotReader(bootstrap="localhost:9092").read()["exp-1"]    # doctest: +SKIP
>>> EdgeAllocator(bootstrap="localhost:9092", seed=7).decide("exp-1")  # doctest: +SKIP

Events are the worker's own typed events (:mod:`lola.stream.events`), checked with the
worker's decoder before they are sent; the producer keys by ``experiment_id`` with the
murmur2 partitioner (docs/clients.md).
"""

from lola.client.edge import Decision, EdgeAllocator, EdgeTable, NotServable
from lola.client.events import click, conversion, decision_request, encode, impression, variant
from lola.client.producer import EventProducer
from lola.client.snapshots import SnapshotReader

__all__ = ["Decision", "EdgeAllocator", "EdgeTable", "EventProducer", "NotServable", "SnapshotReader", "click", "conversion", "decision_request", "encode", "impression",
           "variant"]
