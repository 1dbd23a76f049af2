"""``lola worker``: the Kafka loop around the pure :class:`~lola.stream.processor.ShardProcessor`.

Exactly-once counts without broker transactions
-----------------------------------------------
* Every event type travels on ONE topic keyed by ``experiment_id``. Per-experiment
  order (variant before its impressions, impression before its click) is then the
  log order, and a replay from an offset applies the same events in the same order.
  Separate topics per type would need a co-partitioning assignor *and* would lose that
  cross-type order on replay.
* Partition ``p`` of the events topic is one shard with its own BanditState. Its
  checkpoint (state, registry, dedup window, attribution index and the next input
  offset the state reflects) is ONE record written to partition ``p`` of the compacted
  state topic, as its own produce request, after every output of the batch before it
  has been acknowledged. A checkpoint is self-consistent by construction.
* Checkpoints are incremental (lola.stream.delta): a full base record now and then, and
  between bases small delta records of what changed, each one written like the base
  (one record, after the outputs before it were acknowledged). On assignment the worker
  reads the tail of state partition ``p``, takes the base that reflects the most input
  (highest ``(epoch, next_offset)``: with deterministic processing a later checkpoint,
  even one written by a zombie owner, is the more advanced copy of the same history),
  applies the deltas of its chain while they follow each other (lola.stream.chain) and
  seeks the events partition to the chain's end. Committed group
  offsets are written too, but only for lag monitoring; the checkpoint is the truth.
* A crash therefore replays the events after the last checkpoint into the state of
  that checkpoint: nothing lost, nothing counted twice. Outputs produced after the
  checkpoint are produced again (at-least-once): decisions keep their request_id, dead
  letters keep their source offset header, snapshots are overwritten.
* On revoke: flush outputs, checkpoint the revoked shards, commit. SIGTERM: the same
  for all shards, then exit 0. SIGHUP: reload the prior model and the compliance policy.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import socket
import threading
import time
from typing import Any

from lola.errors import BrokerError, ConfigError
from lola.stream import events as ev
from lola.stream import kafka as kf
from lola.stream.breaker import PartitionBreaker
from lola.stream import chain as chains
from lola.stream.checkpoints import RECORD_OVERHEAD_BYTES, Checkpointer
from lola.stream.compliance import WorkerCompliance
from lola.stream.inflight import GuardedApplyMixin, InflightMarkers
from lola.stream.lifecycle import VariantGate
from lola.stream.observability import HealthServer, RateMeter, WorkerMetrics, observe_many
from lola.stream.memory import HeapTrimmer
from lola.stream.prior_plugins import RequestPriorProvider, provider_from_settings
from lola.stream.priors import OnnxModelProvider, PriorProvider, PriorService
from lola.stream.processor import ShardProcessor, warm_up
from lola.stream.settings import StreamSettings
from lola.stream.shard import BatchOutput, ProcessorConfig
from lola.stream.warm_start import load_dir as load_warm_starts

log = logging.getLogger("lola.stream.worker")

#: How many records at the tail of a state partition are examined on restore with deltas
#: off (with them on: ``2 x (checkpoint_delta_max_chain + 2)``, at least this many).
RESTORE_TAIL = 16
#: TEST ONLY: a worker started with this variable set to a token of at least 16
#: characters exits at once (os._exit, like a segfault) before applying a record whose
#: value contains the token. Unset (production), nothing is checked. It is read from the
#: environment only, never from settings files or flags, so no event can arm it.
TEST_CRASH_ENV = "LOLA_TEST_CRASH_TOKEN"


class Worker(GuardedApplyMixin):
    """One member of the worker consumer group.

    Parameters
    ----------
    settings:
        The typed settings object.
    prior_provider:
        Overrides the provider chosen from settings (ONNX model dir / constant / none).
    serve_http:
        Start the /metrics, /healthz, /readyz server (``settings.metrics_port``).
    """

    def __init__(self, settings: StreamSettings, prior_provider: PriorProvider | RequestPriorProvider | None = None,
                 serve_http: bool = True, gate: VariantGate | None = None) -> None:
        from confluent_kafka import Consumer, Producer

        self.settings = settings
        # First: a bad prior provider setting stops the worker before it touches the broker.
        provider = prior_provider if prior_provider is not None else provider_from_settings(settings)
        # The variant gate of new variants (lola.stream.lifecycle.VariantGate; None: all active);
        # LOLA_COMPLIANCE_POLICY builds lola.comply's gate (lola.stream.compliance). Also before the broker.
        self.compliance = (WorkerCompliance(settings, self.request_variant_state)
                           if gate is None and settings.compliance_policy else None)
        self.gate = self.compliance.gate if self.compliance is not None else gate
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = WorkerMetrics()
        self.heap = HeapTrimmer()
        self.config = dataclasses.replace(ProcessorConfig.from_settings(settings),
                                          warm_starts=load_warm_starts(settings.warm_start_dir, settings.feature_dim))
        self.topic = settings.events_topic
        warm_up()  # JIT before joining the group, never while owning partitions
        kf.ensure_topics(settings)
        self.producer = Producer(kf.producer_config(settings, **{"client.id": self.worker_id}))
        # The largest checkpoint record the state topic takes, as the broker says (fallback:
        # the value this worker gives a topic it creates), capped by the producer's limit.
        broker_limit = kf.topic_max_message_bytes(settings, settings.state_topic)
        self.checkpoint_limit = min(broker_limit or settings.state_max_message_bytes,
                                    kf.PRODUCER_MAX_MESSAGE_BYTES) - RECORD_OVERHEAD_BYTES
        self.metrics.checkpoint_limit_bytes.set(self.checkpoint_limit)
        self.markers = InflightMarkers(settings, self.worker_id,
                                       on_failure=lambda: self.metrics.inflight_marker_failures.inc())
        self.breakers: dict[int, PartitionBreaker] = {}
        token = os.environ.get(TEST_CRASH_ENV)
        if token is not None and len(token) < 16:
            raise ConfigError(f"{TEST_CRASH_ENV} must be at least 16 characters (test-only crash hook)")
        self._crash_token = token.encode() if token else None
        if self._crash_token:
            log.warning("TEST ONLY crash hook armed: records containing the token kill this process")
        self.consumer = Consumer(kf.consumer_config(
            settings, **{"client.id": self.worker_id, "partition.assignment.strategy": "range",
                         "session.timeout.ms": settings.session_timeout_ms,
                         "heartbeat.interval.ms": 1000, "max.poll.interval.ms": 300_000}))
        self.deliveries = kf.DeliveryTracker()
        self.dead_letters = kf.KafkaDeadLetterPolicy(
            self.producer, settings.deadletter_topic, self.deliveries,
            on_error=lambda err: self.metrics.produce_errors.inc())
        self.priors = PriorService(provider, settings.prior_timeout_s, settings.prior_batch_size,
                                   on_fallback=lambda reason: self.metrics.prior_fallbacks.labels(reason).inc(),
                                   on_latency=self.metrics.prior_seconds.observe,
                                   watch_interval_s=settings.model_watch_interval_s)
        self.shards: dict[int, ShardProcessor] = {}
        self.dirty_experiments: dict[int, set[str]] = {}
        self.checkpointer = Checkpointer(self)  # both checkpoint paths (lola.stream.checkpoints)
        self._first_assigned_at: float | None = None
        self._state_requests: queue.SimpleQueue = queue.SimpleQueue()  # request_variant_state -> the loop
        self._budget_evictions: dict[int, int] = {}  # partition -> dedup budget evictions already counted
        self._stop = threading.Event()
        self._failed = False  # set when the loop dies mid-batch: then never checkpoint
        self._callback_error: BaseException | None = None
        self._ready = False
        self._heartbeat = time.monotonic()
        self._rate = RateMeter()
        self.http: HealthServer | None = None
        self._serve_http = serve_http
        self.bound_metrics_port: int | None = None

    # ------------------------------------------------------------------ control
    def stop(self, *_: Any) -> None:
        """Ask the loop to finish (safe from a signal handler)."""
        self._stop.set()

    def reload_priors(self, *_: Any) -> None:
        """SIGHUP: reload the prior model and the compliance policy (safe from a signal handler)."""
        if self.compliance is not None:
            self.compliance.request_reload()
        if isinstance(self.priors.provider, OnnxModelProvider):
            self.priors.provider.request_reload()
            log.info("prior model reload requested")

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGHUP, self.reload_priors)

    def healthy(self) -> bool:
        return time.monotonic() - self._heartbeat < 30.0

    def ready(self) -> bool:
        return self._ready and self.healthy()

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, partitions: list[int] | None = None, commit_sync: bool = False) -> int:
        """Synchronous checkpoint of ``partitions`` (all): see :meth:`Checkpointer.checkpoint`."""
        return self.checkpointer.checkpoint(partitions, commit_sync)

    def begin_checkpoint(self) -> bool:
        return self.checkpointer.begin()

    def advance_checkpoint(self) -> None:
        self.checkpointer.advance()

    # ------------------------------------------------------------------ rebalance
    def _checkpoint_key(self, partition: int) -> bytes:
        # One writer group per state topic is the intended setup; the key still names
        # group and topic so a second group never restores another group's state.
        return f"{self.settings.group_id}:{self.topic}:{partition}".encode()

    def _read_chain(self, topic: str, partition: int, must_exist: bool = True) -> chains.Chain | None:
        """This group's newest checkpoint chain of ``partition`` in ``topic`` (None if it has none).

        The tail first (long enough for a base and a full chain of deltas); if it holds no
        base of this group (a state topic shared on purpose with busier groups, or a chain
        interleaved with others), the whole partition. With ``must_exist=False`` a missing
        topic reads as empty instead of an error (the legacy topic, see _restore).
        """
        conf = kf.consumer_config(self.settings, f"{self.settings.group_id}.restore")
        ends = kf.watermarks(conf, topic, partition, must_exist)
        if ends is None:
            return None
        low, high = ends
        want_key = self._checkpoint_key(partition)
        prefix = want_key + chains.DELTA_KEY_INFIX
        max_chain = self.settings.checkpoint_delta_max_chain
        tail = 2 * (max_chain + 2) if self.settings.checkpoint_deltas else RESTORE_TAIL
        start = max(low, high - max(RESTORE_TAIL, tail))
        best = None
        for begin in ((start, low) if start > low else (start,)) if high > low else ():
            # A generator: select_chain keeps only the best base and its deltas, never the
            # records it reads (a whole-partition read can be the entire history).
            records = ((msg.key(), msg.value()) for msg in kf.read_partition_to_end(conf, topic, partition, begin)
                       if msg.key() == want_key or (msg.key() or b"").startswith(prefix))
            best = chains.select_chain(records, want_key, max_chain)
            if best is not None:
                break
        return best

    def _restore(self, partition: int) -> ShardProcessor:
        """The shard as of its best checkpoint, or a fresh shard at offset 0.

        Upgrade path: builds before the per-group state topic wrote every group's
        checkpoints to one shared topic (``legacy_state_topic``, default ``lola.state``).
        When this group's own topic has no checkpoint of the partition yet, the legacy
        topic is read for this group's key (group, events topic, partition), so a rolling
        upgrade keeps exact counts; the next checkpoint goes to the new topic.
        """
        best = self._read_chain(self.settings.state_topic, partition)
        legacy = self.settings.legacy_state_topic
        from_legacy = False
        if best is None and legacy and legacy != self.settings.state_topic:
            best = self._read_chain(legacy, partition, must_exist=False)
            from_legacy = best is not None
            if from_legacy:
                self.metrics.legacy_restores.inc()
                log.warning("shard restored from the legacy state topic; later checkpoints go to the group's own",
                            extra={"partition": partition, "legacy_topic": legacy,
                                   "state_topic": self.settings.state_topic})
        if best is None:
            shard = ShardProcessor(partition, self.config, gate=self.gate)
        else:
            shard = chains.restore(best, self.config, gate=self.gate)
        cp = self.checkpointer
        cp.restored(partition, best.max_epoch if best is not None and not from_legacy else 0)
        breaker = PartitionBreaker(partition, self.settings.poison_after_deaths, self.markers.read(partition),
                                   shard.next_offset)
        self.breakers[partition] = breaker
        if breaker.died_in_flight is not None and breaker.suspects:
            log.error("previous owner died while applying records; applying them one at a time",
                      extra={"partition": partition, "in_flight": list(breaker.died_in_flight),
                             "suspects": [s.to_json()[:3] for s in breaker.suspects]})
        if from_legacy:
            # Not in the group's own topic yet: the next periodic checkpoint copies it
            # there, so the legacy topic is needed once only and may then be deleted.
            cp.checkpointed_offset.pop(partition, None)
            cp.checkpointed_at.pop(partition, None)
        else:
            cp.checkpointed_offset[partition] = shard.next_offset
            cp.checkpointed_at[partition] = time.time()
        for req in shard.missing_priors():
            self.priors.submit(req)
        log.info("shard restored", extra={"partition": partition, "next_offset": shard.next_offset,
                                          "experiments": len(shard.experiments), "from_checkpoint": best is not None,
                                          "deltas": len(best.deltas) if best is not None else 0})
        return shard

    def _guarded(self, what: str, handler):
        """Wrap a rebalance handler for librdkafka.

        Exceptions must not escape a librdkafka callback (confluent-kafka turns them into
        an unhelpful SystemError); keep them and re-raise from the loop.
        """

        def callback(consumer: Any, partitions: list) -> None:
            try:
                handler(consumer, partitions)
            except BaseException as exc:  # noqa: BLE001
                log.error("partition %s failed", what, exc_info=True)
                self._callback_error = exc

        return callback

    def _assign(self, consumer: Any, partitions: list) -> None:
        self._ready = False
        if self._first_assigned_at is None:
            self._first_assigned_at = time.perf_counter()
        for tp in partitions:
            if tp.topic != self.topic:
                continue
            shard = self._restore(tp.partition)
            self.shards[tp.partition] = shard
            shard.reserve_restore_ring()
            beyond = self._events_end(tp.partition, shard.next_offset) if shard.next_offset > 0 else None
            if beyond is not None:
                self._offset_reset(tp.partition, shard, beyond[0], end=beyond[1])
            self.dirty_experiments[tp.partition] = set(shard.experiments)  # republish snapshots
            tp.offset = shard.next_offset
        consumer.assign(partitions)
        self.metrics.partitions.set(len(self.shards))
        self._ready = True
        log.info("partitions assigned", extra={"partitions": sorted(self.shards)})

    def _on_revoke(self, consumer: Any, partitions: list) -> None:
        revoked = [tp.partition for tp in partitions if tp.topic == self.topic and tp.partition in self.shards]
        if revoked and not self._failed:
            self._publish_snapshots(revoked)
            self.checkpoint(revoked, commit_sync=True)
            self._clear_markers(revoked)
        for p in revoked:
            self._drop(p)
        self.metrics.partitions.set(len(self.shards))
        log.info("partitions revoked", extra={"partitions": revoked})

    def _on_lost(self, consumer: Any, partitions: list) -> None:
        for tp in partitions:
            self._drop(tp.partition)
        self.metrics.partitions.set(len(self.shards))
        log.warning("partitions lost (not checkpointed)", extra={"partitions": [tp.partition for tp in partitions]})

    def _drop(self, partition: int) -> None:
        self.shards.pop(partition, None)
        self.breakers.pop(partition, None)
        self.dirty_experiments.pop(partition, None)
        self.checkpointer.drop(partition)
        self._budget_evictions.pop(partition, None)
        for gauge in (self.metrics.lag, self.metrics.state_bytes):
            try:
                gauge.remove(str(partition))
            except KeyError:
                pass


    def _publish_snapshots(self, partitions: list[int] | None = None) -> int:
        n = 0
        now = time.time()
        for p in (sorted(self.shards) if partitions is None else partitions):
            shard = self.shards.get(p)
            dirty = self.dirty_experiments.get(p)
            if shard is None or not dirty:
                continue
            for exp_id in dirty:
                try:
                    value = ev.encode_snapshot(shard.snapshot(exp_id, now))
                except Exception as exc:  # noqa: BLE001
                    # A snapshot is a side output: one that cannot be built or breaks its model
                    # (a bug, never an input: inputs are validated) is logged and counted, never
                    # allowed to stop the partition. The next change of the experiment retries it.
                    self.metrics.snapshot_errors.inc()
                    log.error("snapshot not published", exc_info=True,
                              extra={"partition": p, "experiment_id": exp_id, "error": f"{type(exc).__name__}: {exc}"})
                    continue
                self.deliveries.produce(self.producer, self.settings.snapshots_topic, value, key=exp_id.encode(),
                                        callback=self._on_output)
                n += 1
            dirty.clear()
        return n

    def _on_output(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.metrics.produce_errors.inc()
            log.error("output not delivered", extra={"topic": msg.topic() if msg else None, "error": str(err)})

    # ------------------------------------------------------------------ main loop
    def _emit(self, partition: int, out: BatchOutput) -> None:
        m = self.metrics
        track = self.deliveries.produce
        topic = self.settings.decisions_topic
        for key, value in out.decisions:
            track(self.producer, topic, value, key=key, callback=self._on_output)
        if out.decisions:
            m.decisions.inc(len(out.decisions))
        for letter in out.dead_letters:
            self.dead_letters.handle(self.topic, partition, letter)
            m.dead_letters.labels(letter.reason).inc()
            if letter.reason.startswith("late_"):
                m.late_events.inc()
        for req in out.prior_requests:
            self.priors.submit(req)
        for kind, n in out.counts.items():
            m.events.labels(kind).inc(n)
        for kind, n in out.duplicates.items():
            m.duplicates.labels(kind).inc(n)
        if out.budget_evictions > self._budget_evictions.get(partition, 0):
            m.dedup_budget_evictions.inc(out.budget_evictions - self._budget_evictions.get(partition, 0))
        self._budget_evictions[partition] = out.budget_evictions
        if out.dirty:
            self.dirty_experiments.setdefault(partition, set()).update(out.dirty)
        for exp_id in out.evicted:  # after the final snapshot (published at archive): a tombstone
            self.dirty_experiments.get(partition, set()).discard(exp_id)
            self.deliveries.produce(self.producer, self.settings.snapshots_topic, None, key=exp_id.encode(),
                                    callback=self._on_output)
            m.evictions.inc()
        if out.evicted:
            self.heap.evicted_experiments(len(out.evicted))  # their memory back to the OS (stream/memory.py)

    def request_variant_state(self, experiment_id: str, variant_id: str, state: str, reason: str | None = None) -> None:
        """Thread-safe: move a variant to ``state`` (pending -> active/blocked after an off-path
        check, a re-check); applied by the loop, by the shard that owns the experiment."""
        self._state_requests.put((experiment_id, variant_id, state, reason))

    def _apply_state_requests(self) -> None:
        while not self._state_requests.empty():
            experiment_id, variant_id, state, reason = self._state_requests.get_nowait()
            for p, shard in self.shards.items():
                if experiment_id in shard.experiments:
                    if shard.set_variant_state(experiment_id, variant_id, state, reason):
                        self.dirty_experiments.setdefault(p, set()).add(experiment_id)
                    break

    def _apply_priors(self) -> None:
        for res in self.priors.results():
            shard = self.shards.get(res.partition)
            if shard is not None and shard.apply_prior(res.experiment_id, res.variant_id, res.prior, res.features):
                self.metrics.priors_applied.inc()
                self.dirty_experiments.setdefault(res.partition, set()).add(res.experiment_id)

    def _update_gauges(self) -> None:
        from confluent_kafka import TopicPartition

        self.metrics.events_per_s.set(self._rate.rate())
        self.metrics.experiments.set(sum(len(shard.experiments) for shard in self.shards.values()))
        provider = self.priors.provider
        version = getattr(provider, "model_version", None)
        self.metrics.prior_model.info({"provider": type(provider).__name__ if provider is not None else "none",
                                       "model_version": str(version) if version is not None else "none"})
        now = time.time()
        if self.checkpointer.checkpointed_at:
            self.metrics.checkpoint_age.set(now - min(self.checkpointer.checkpointed_at.values()))
        for p, shard in self.shards.items():
            join = shard.ctx.join  # contextual experiments (docs/contextual.md)
            self.metrics.context_never_joined.labels(str(p)).set(sum(join.never_joined.values()))
            self.metrics.join_window_bytes.labels(str(p)).set(join.bytes)
            try:
                # cached=True: the high watermark of the last Fetch response (exact on Tansu too).
                _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            except Exception:
                continue
            if high >= 0:
                self.metrics.lag.labels(str(p)).set(max(0, high - shard.next_offset))

    def _consume_batch(self) -> tuple[float, int, int, int] | None:
        """Consume one batch and apply it: (start, records, decisions, dead letters); None if
        nothing came.

        A scope of its own on purpose: the messages, the parsed records and the batch outputs
        are unreferenced once it returns. As locals of the loop they lived until the next batch,
        so an idle worker kept librdkafka's fetch buffers and the ids its last sweep evicted
        (thousands of small strings scattered over the heap, each keeping a page resident after
        the heap trim: stream/memory.py, docs/operations/limits.md)."""
        from confluent_kafka import KafkaError

        s = self.settings
        msgs = self.consumer.consume(s.batch_size, s.poll_timeout_s)
        if self._callback_error is not None:
            raise self._callback_error
        if not msgs:
            return None
        t0 = time.perf_counter()
        by_partition: dict[int, tuple[list, list]] = {}
        wall = time.time()
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise BrokerError.from_kafka_error("fatal consumer error", err)
                log.warning("consumer error", extra={"error": str(err), "code": err.code()})
                continue
            recs, stamps = by_partition.setdefault(msg.partition(), ([], []))
            recs.append((msg.offset(), msg.key(), msg.value()))
            kind, ms = msg.timestamp()
            stamps.append(ms / 1000.0 if kind else wall)  # kind 0: no timestamp
        decisions = dead = consumed = 0
        for out in self._apply(by_partition):
            decisions += len(out.decisions)
            dead += len(out.dead_letters)
        if decisions:
            observe_many(self.metrics.decision_seconds, time.perf_counter() - t0, decisions)
        for records, _ in by_partition.values():
            n = len(records)
            consumed += n
            self._rate.add(n)
            self.metrics.records.inc(n)
        return t0, consumed, decisions, dead

    def run(self, max_records: int | None = None, idle_exit_s: float | None = None) -> dict[str, Any]:
        """Consume until stopped (SIGTERM), ``max_records`` consumed, or idle for ``idle_exit_s``.

        Returns a small summary (records consumed, decisions, dead letters).
        """
        s = self.settings
        if self._serve_http:
            try:
                self.http = HealthServer(self.metrics, s.metrics_host, s.metrics_port, self.healthy,
                                         self.ready).start()
            except OSError as exc:
                raise ConfigError(f"cannot serve metrics on {s.metrics_host}:{s.metrics_port}: {exc}") from None
            self.bound_metrics_port = self.http.port
        self.priors.start()
        self.consumer.subscribe([self.topic], on_assign=self._guarded("assignment", self._assign),
                                on_revoke=self._guarded("revocation", self._on_revoke),
                                on_lost=self._guarded("loss", self._on_lost))
        log.info("worker started", extra={"worker_id": self.worker_id, "metrics_port": self.bound_metrics_port,
                                          "python_malloc": os.environ.get("PYTHONMALLOC"), "settings": s.safe_dict()})
        consumed = 0
        last_checkpoint = last_snapshot = last_gauges = time.monotonic()
        last_data = time.monotonic()
        decisions = dead = 0
        t_first = t_last = None
        try:
            while not self._stop.is_set():
                self._heartbeat = now = time.monotonic()
                got = self._consume_batch()
                if got is not None:
                    t0, n, batch_decisions, batch_dead = got
                    consumed += n
                    decisions += batch_decisions
                    dead += batch_dead
                    t_last = time.perf_counter()
                    if t_first is None:
                        t_first = t0
                    self.metrics.batch_seconds.observe(t_last - t0)
                    last_data = now
                self._apply_priors()
                if self.compliance is not None:
                    self.compliance.tick(self.shards)
                self._apply_state_requests()
                self.producer.poll(0)
                if now - last_snapshot >= s.snapshot_interval_s:
                    self._publish_snapshots()
                    last_snapshot = now
                if now - last_checkpoint >= s.checkpoint_interval_s and self.checkpointer.pending is None:
                    self.begin_checkpoint()
                    last_checkpoint = now
                else:
                    self.advance_checkpoint()
                if now - last_gauges >= 1.0:
                    self._update_gauges()
                    self.heap.tick()
                    last_gauges = now
                if max_records is not None and consumed >= max_records:
                    break
                if idle_exit_s is not None and time.monotonic() - last_data > idle_exit_s:
                    break
            # Graceful end (SIGTERM): snapshots, checkpoint, commit, leave the group.
            self._publish_snapshots()
            self.checkpoint(commit_sync=True)
            self._clear_markers(sorted(self.shards))
        except BaseException:
            self._failed = True  # a shard may be half-way through a batch: never checkpoint it
            raise
        finally:
            self.priors.stop()
            if self.compliance is not None:
                self.compliance.close()
            try:
                self.consumer.close()  # triggers on_revoke -> no-op checkpoint of clean shards
            except Exception as exc:
                log.warning("consumer close failed", extra={"error": str(exc)})
            self.producer.flush(10)
            self.markers.close()
            if self.http is not None:
                self.http.stop()
        log.info("worker stopped", extra={"records": consumed, "decisions": decisions, "dead_letters": dead})
        return {"records": consumed, "decisions": decisions, "dead_letters": dead,
                "busy_seconds": (t_last - t_first) if t_first is not None else 0.0,
                # from the first assignment (restore included) to the last record: what a
                # reader pays from "start fetching" to "done", comparable across consumers
                "seconds_since_assignment": (t_last - self._first_assigned_at)
                if t_last is not None and self._first_assigned_at is not None else 0.0}
