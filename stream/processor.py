"""Pure event processing for one partition-shard: no confluent_kafka, no I/O.

A :class:`ShardProcessor` owns the experiments whose key hashes to one partition of
the events topic. It holds a :class:`lola.kernels.BanditState`, the experiment and
variant registry, the de-duplication window and the attribution index, and the next
input offset its state reflects. :meth:`ShardProcessor.process` turns a batch of
``(offset, key, value)`` records into outputs (decisions, dead letters, prior
requests, dirty experiments); :meth:`to_checkpoint` / :meth:`from_checkpoint` make
the exact, self-consistent checkpoint the worker writes to the state topic.

Batch semantics
---------------
Within one consumed batch, records are handled in log order; variant add/retire
take effect at once, counting events (impression, click, conversion) are gathered and
applied with one :func:`lola.kernels.update` call at the end of the batch, and the
batch's decision requests are then answered by one :func:`lola.kernels.select` call.
So a decision sees every event logged before the end of its batch. Counts never
depend on batch boundaries; decisions may (a decision re-emitted after a crash keeps
its ``request_id`` but may name another variant).

Attribution window
------------------
A click (or conversion) that names a remembered impression (``impression_id``, or a
``request_id`` an impression carried) is late if it comes more than the window after
that impression. Otherwise it is late if its ts is more than the window before the
newest event time seen for its experiment. Late events go to dead letters
(``late_click`` / ``late_conversion``) and a metric; they are never silently dropped.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import numpy as np
import orjson

from lola.errors import CapacityError, ConfigError, EventError, KernelInputError, LolaError
from lola.kernels.params import ExperimentParams
from lola.kernels.policy_table import TABLE as POLICY_TABLE
from lola.kernels.rng import mix_seed as _mix_seed
from lola.stream import events as ev
from lola.stream.features import text_features
from lola.stream.shard import BatchOutput, DeadLetter, Experiment, PriorRequest, ProcessorConfig, IdWindow
from lola.stream.warm_start import linear_setup

CHECKPOINT_MAGIC = b"LOLACKP1"
CHECKPOINT_VERSION = 1
#: Records applied since the last restore point after which the shard takes a new one
#: itself (normally the worker's checkpoint, every checkpoint_interval_s, takes it).
JOURNAL_MAX_RECORDS = 500_000


class ShardProcessor:
    """State and processing of one partition of the events topic (see module docstring)."""

    def __init__(self, partition: int, config: ProcessorConfig | None = None, *,
                 state: Any = None, next_offset: int = 0, restore_point: bytes | None = None) -> None:
        from lola.kernels import BanditState

        self.partition = partition
        self.config = config or ProcessorConfig()
        self.state = state if state is not None else BanditState(
            capacity_experiments=64, capacity_arms=4, feature_dim=self.config.feature_dim)
        self.experiments: dict[str, Experiment] = {}
        self.by_row: dict[int, Experiment] = {}
        self.next_offset = next_offset
        self.seen = IdWindow(self.config.dedup_window)          # event_id -> impression ts or -1
        self.imp_by_request = IdWindow(self.config.dedup_window)  # request_id -> impression ts
        self.decided = IdWindow(self.config.request_memory)     # request_id -> [variant, propensity, version]
        self.events_applied = 0
        # Fault isolation (see process): the last restore point (a checkpoint blob, or None
        # for "fresh at _restore_offset") and everything applied since, in order.
        self._restore_blob = restore_point
        self._restore_offset = next_offset
        self._journal: list[tuple] = []
        self._journal_records = 0
        self.rollbacks = 0

    # ------------------------------------------------------------------ processing
    def process(self, records: list[tuple[int, bytes | None, bytes | None]], now: float | None = None,
                timestamps: list[float] | None = None) -> BatchOutput:
        """Apply a batch of ``(offset, key, value)`` records in log order.

        Records at offsets below :attr:`next_offset` (already reflected in the state)
        are skipped, so a re-delivered batch never counts twice. ``timestamps`` (the
        records' Kafka timestamps in seconds, parallel to ``records``) are the reference
        of the ``future_ts`` check; without them it is ``now`` (the worker's clock).

        Fault isolation: if applying the batch raises anything but an EventError (a
        kernel bug, an exception nobody foresaw), the shard is rolled back to its state
        before the batch and the records are applied one by one; the one that fails is
        a ``processing_error`` dead letter (exception class in its detail) and the rest
        count exactly once.
        """
        now = time.time() if now is None else now
        applied = self.events_applied
        try:
            out = self._process(records, now, timestamps)
        except Exception as exc:  # noqa: BLE001 - anything: the shard must survive it
            return self._isolate(records, now, timestamps, applied, exc)
        self._journal.append((0, records, now, timestamps))
        self._journal_records += len(records)
        if self._journal_records > JOURNAL_MAX_RECORDS:
            self.mark()
        return out

    def _process(self, records: list, now: float, timestamps: list[float] | None) -> BatchOutput:
        from lola.kernels import update

        out = BatchOutput()
        cfg = self.config
        skew = cfg.max_future_skew_s
        latest = now + skew
        rows: list[int] = []
        slots: list[int] = []
        imps: list[float] = []
        clks: list[float] = []
        convs: list[float] = []
        requests: list[tuple[ev.DecisionRequest, Experiment, int, bytes | None, bytes | None]] = []
        counts = out.counts
        seen = self.seen
        seen_put = seen.put
        seen_map = seen.map
        experiments = self.experiments
        decode = ev.decode
        Impression, Click, Conversion = ev.Impression, ev.Click, ev.Conversion
        check_key = cfg.check_key
        max_bytes = cfg.max_message_bytes
        first_offset = None
        next_offset = self.next_offset
        for i, (offset, key, value) in enumerate(records):
            if offset < next_offset:
                continue
            if first_offset is None:
                first_offset = offset
            next_offset = self.next_offset = offset + 1
            try:
                event = decode(value, (key or b"") if check_key else None, max_bytes)
                exp = experiments.get(event.experiment_id)
                kind = type(event)
                if kind is Impression or kind is Click or kind is Conversion:
                    if event.ts > (latest if timestamps is None else timestamps[i] + skew):
                        raise EventError("future_ts", f"ts {event.ts:.0f} is more than {skew:g}s ahead of "
                                                      f"{'now' if timestamps is None else 'its Kafka timestamp'}")
                    if event.event_id in seen_map:
                        out.duplicates += 1
                        continue
                    if exp is None:
                        raise EventError("unknown_experiment", event.experiment_id[:80])
                    slot = exp.slots.get(event.variant_id)
                    if slot is None:
                        raise EventError("unknown_variant", f"{event.experiment_id[:60]}/{event.variant_id[:60]}")
                    if kind is Impression:
                        seen_put(event.event_id, event.ts)
                        if event.request_id is not None:
                            self.imp_by_request.put(event.request_id, event.ts)
                        rows.append(exp.row); slots.append(slot); imps.append(1.0); clks.append(0.0); convs.append(0.0)
                    else:
                        self._check_attribution(event, exp, "late_click" if kind is Click else "late_conversion")
                        seen_put(event.event_id, -1.0)
                        rows.append(exp.row); slots.append(slot); imps.append(0.0)
                        if kind is Click:
                            clks.append(1.0); convs.append(0.0)
                        else:
                            clks.append(0.0); convs.append(event.value)
                    if event.ts > exp.max_ts:
                        exp.max_ts = event.ts
                    exp.version += 1
                    out.dirty.add(exp.experiment_id)
                elif kind is ev.DecisionRequest:
                    if exp is None:
                        raise EventError("unknown_experiment", event.experiment_id[:80])
                    requests.append((event, exp, offset, key, value))
                else:  # Variant
                    self._apply_variant(event, exp, out)
                counts[kind.__name__] = counts.get(kind.__name__, 0) + 1
            except EventError as exc:
                out.dead_letters.append(DeadLetter(offset, key, value, exc.reason, exc.detail))
        if rows:
            n = len(rows)
            update(self.state, np.asarray(rows, dtype=np.int64), np.asarray(slots, dtype=np.int64),
                   np.asarray(imps, dtype=np.float64), np.asarray(clks, dtype=np.float64),
                   np.asarray(convs, dtype=np.float64))
            self.events_applied += n
        if requests:
            self._decide(requests, out, now, first_offset or 0)
        return out

    # ------------------------------------------------------------------ fault isolation
    def _isolate(self, records: list, now: float, timestamps: list[float] | None, applied: int,
                 exc: BaseException) -> BatchOutput:
        """Roll back, then apply ``records`` one at a time (see :meth:`process`)."""
        self._rollback()
        self.events_applied = applied
        self.mark()  # the pre-batch state: each failing record below then costs one restore
        out = BatchOutput()
        for i, rec in enumerate(records):
            if rec[0] < self.next_offset:
                continue
            one = [rec]
            ts = None if timestamps is None else [timestamps[i]]
            try:
                part = self._process(one, now, ts)
            except Exception as err:  # noqa: BLE001
                self._rollback()
                self.next_offset = rec[0] + 1
                self._journal.append((2, rec[0]))
                detail = f"{type(err).__name__}: {err}"[:300]
                out.dead_letters.append(DeadLetter(rec[0], rec[1], rec[2], "processing_error", detail))
                continue
            self._journal.append((0, one, now, ts))
            self._journal_records += 1
            out.decisions += part.decisions
            out.dead_letters += part.dead_letters
            out.prior_requests += part.prior_requests
            for kind, n in part.counts.items():
                out.counts[kind] = out.counts.get(kind, 0) + n
            out.duplicates += part.duplicates
            out.dirty |= part.dirty
        return out

    def skip(self, offset: int) -> None:
        """Never apply the record at ``offset`` (the crash-loop breaker dead-lettered it)."""
        if offset >= self.next_offset:
            self.next_offset = offset + 1
            self._journal.append((2, offset))

    def rewind(self, offset: int) -> None:
        """Resume at ``offset`` below :attr:`next_offset` (the partition was recreated)."""
        self.next_offset = offset
        self._journal.append((3, offset))

    def mark(self, topic: str = "") -> bytes:
        """Serialise the shard (a checkpoint record) and make it the restore point."""
        blob = self.to_checkpoint(topic)
        self._restore_blob = blob
        self._journal = []
        self._journal_records = 0
        return blob

    def _rollback(self) -> None:
        """Back to the restore point, then re-apply the journal (its outputs were emitted already)."""
        if self._restore_blob is None:
            fresh = ShardProcessor(self.partition, self.config, next_offset=self._restore_offset)
        else:
            fresh = ShardProcessor.from_checkpoint(self._restore_blob, self.config)
        journal, blob, start, rollbacks = self._journal, self._restore_blob, self._restore_offset, self.rollbacks
        self.__dict__.update(fresh.__dict__)
        self._restore_blob, self._restore_offset, self.rollbacks = blob, start, rollbacks + 1
        for entry in journal:
            if entry[0] == 0:
                self._process(entry[1], entry[2], entry[3])
            elif entry[0] == 1:
                self._apply_prior(entry[1], entry[2], entry[3])
            elif entry[0] == 2:
                self.next_offset = max(self.next_offset, entry[1] + 1)
            else:
                self.next_offset = entry[1]
        self._journal = journal
        self._journal_records = sum(len(e[1]) for e in journal if e[0] == 0)

    def _check_attribution(self, event: Any, exp: Experiment, reason: str) -> None:
        window = exp.attribution_window_s
        ref = None
        impression_id = getattr(event, "impression_id", None)
        if impression_id is not None:
            ref = self.seen.get(impression_id)
            if ref is not None and ref < 0:
                ref = None  # that id was a click or conversion, not an impression
        request_id = getattr(event, "request_id", None)
        if ref is None and request_id is not None:
            ref = self.imp_by_request.get(request_id)
        if ref is not None:
            if event.ts - ref > window:
                raise EventError(reason, f"{event.ts - ref:.0f}s after its impression > window {window:g}s")
        elif event.ts < exp.max_ts - window:
            raise EventError(reason, f"{exp.max_ts - event.ts:.0f}s older than the newest event > window {window:g}s")

    def _apply_variant(self, event: ev.Variant, exp: Experiment | None, out: BatchOutput) -> None:
        if event.action == "retire":
            if exp is None:
                raise EventError("unknown_experiment", event.experiment_id[:80])
            slot = exp.slots.get(event.variant_id)
            if slot is None:
                raise EventError("unknown_variant", f"{event.experiment_id[:60]}/{event.variant_id[:60]}")
            if bool(self.state.active[exp.row, slot]):
                self.state.retire_arm(exp.row, slot)
                exp.version += 1
                out.dirty.add(exp.experiment_id)
            return
        if exp is None:
            settings = dict(event.settings or {})
            window = float(settings.pop("attribution_window_s", self.config.attribution_window_s))
            if not window > 0:
                raise EventError("invalid_settings", "attribution_window_s must be > 0")
            policy = settings.get("policy", self.config.default_policy)
            # The worker's defaults fill only what the chosen policy reads (docs/policies.md);
            # a setting it does not read, sent by the producer, is invalid_settings.
            reads = POLICY_TABLE[policy].accepts if policy in POLICY_TABLE else ()
            defaults = {name: value for name, value in (("alpha", self.config.default_alpha),
                                                         ("n_aux", self.config.default_n_aux)) if name in reads}
            warm = linear_setup(policy, settings.pop("warm_start", None), self.config.warm_starts,
                                self.state.feature_dim)
            params = {"policy": policy, **defaults, **settings}
            try:
                row = self.state.add_experiment(ExperimentParams.from_dict(params))
            except CapacityError as exc:
                raise EventError("capacity", str(exc)[:120]) from None
            except (ConfigError, TypeError, ValueError) as exc:
                raise EventError("invalid_settings", str(exc)[:160]) from None
            if warm is not None:
                self.state.warm_start_linear(row, *warm)
            exp = Experiment(event.experiment_id, row, self.state.params(row).policy, window)
            self.experiments[exp.experiment_id] = exp
            self.by_row[row] = exp
        if event.variant_id in exp.slots:
            return  # adding a known variant again is a no-op (idempotent upstream retries)
        # LinUCB arms get their features with the arm (lola.stream.features), so they are
        # servable at once; the state's d, not the config's, so a restored shard keeps its own.
        features = (text_features(event.text, self.state.feature_dim)
                    if POLICY_TABLE[exp.policy].needs_features else None)
        try:
            slot = self.state.add_arm(exp.row, features=features)
        except (CapacityError, KernelInputError) as exc:
            raise EventError("capacity", str(exc)[:120]) from None
        exp.slots[event.variant_id] = slot
        exp.variant_ids.append(event.variant_id)
        exp.texts.append(event.text)
        exp.version += 1
        out.dirty.add(exp.experiment_id)
        out.prior_requests.append(PriorRequest(self.partition, exp.experiment_id, event.variant_id, event.text,
                                               tuple(exp.texts[:-1])))

    def _decide(self, requests: list, out: BatchOutput, now: float, first_offset: int) -> None:
        from lola.kernels import select

        fresh: list[tuple[ev.DecisionRequest, Experiment]] = []
        servable: dict[int, bool] = {}  # per experiment row: has an active arm (once per batch)
        decided = self.decided.map
        for req, exp, offset, key, value in requests:
            prior = decided.get(req.request_id)
            row = exp.row
            ok = servable.get(row)
            if ok is None:
                ok = servable[row] = bool(self.state.active[row, :int(self.state.n_arms[row])].any())
            if prior is not None:  # upstream retry: answer with the same decision again
                out.duplicates += 1
                out.decisions.append((exp.experiment_id.encode(), ev.encode_decision(
                    req.request_id, exp.experiment_id, prior[0], prior[1], exp.policy, prior[2], now)))
            elif not ok:
                out.dead_letters.append(DeadLetter(offset, key, value, "no_active_variant", exp.experiment_id[:80]))
            else:
                fresh.append((req, exp))
        if not fresh:
            return
        rows = np.fromiter((exp.row for _, exp in fresh), dtype=np.int64, count=len(fresh))
        chosen, propensity = select(self.state, rows, _mix_seed(self.config.seed, self.partition, first_offset))
        for (req, exp), slot, p in zip(fresh, chosen.tolist(), propensity.tolist()):
            variant_id = exp.variant_ids[slot]
            self.decided.put(req.request_id, (variant_id, p, exp.version))
            out.decisions.append((exp.experiment_id.encode(), ev.encode_decision(
                req.request_id, exp.experiment_id, variant_id, p, exp.policy, exp.version, now)))

    # ------------------------------------------------------------------ priors
    def apply_prior(self, experiment_id: str, variant_id: str, prior: float) -> bool:
        """Apply a prior that arrived from the prior provider; False if the arm is gone."""
        self._journal.append((1, experiment_id, variant_id, prior))
        return self._apply_prior(experiment_id, variant_id, prior)

    def _apply_prior(self, experiment_id: str, variant_id: str, prior: float) -> bool:
        exp = self.experiments.get(experiment_id)
        slot = exp.slots.get(variant_id) if exp else None
        if slot is None:
            return False
        self.state.set_prior(exp.row, slot, float(prior))
        exp.version += 1
        return True

    def missing_priors(self) -> list[PriorRequest]:
        """Active arms without a prior (asked again after a restore)."""
        out = []
        for exp in self.experiments.values():
            for slot, vid in enumerate(exp.variant_ids):
                if self.state.active[exp.row, slot] and not self.state.has_prior[exp.row, slot]:
                    out.append(PriorRequest(self.partition, exp.experiment_id, vid, exp.texts[slot],
                                            tuple(t for i, t in enumerate(exp.texts) if i != slot)))
        return out

    # ------------------------------------------------------------------ snapshots
    def snapshot(self, experiment_id: str, now: float | None = None) -> dict[str, Any]:
        """Policy snapshot of one experiment (value of the compacted snapshots topic).

        ``serving_share`` per arm is the allocation the decisions' propensities come from
        (the same cached value for this state version); BAI experiments add ``bai``:
        ``done``, ``good_set`` and ``recommendation`` (variant ids).
        """
        exp = self.experiments[experiment_id]
        summary = self.state.experiment_summary(exp.row, seed=_mix_seed(self.config.seed, exp.version))
        arms = {}
        for arm in summary["arms"]:
            vid = exp.variant_ids[arm["slot"]]
            arms[vid] = {k: arm[k] for k in ("impressions", "clicks", "conversions", "prior", "score",
                                             "serving_share", "active")}
            arms[vid]["text"] = exp.texts[arm["slot"]][:ev.SNAPSHOT_TEXT_CHARS]
        snap = {"v": ev.SCHEMA_VERSION, "type": "policy_snapshot", "experiment_id": experiment_id,
                "policy": exp.policy, "policy_version": exp.version, "n_aux": summary.get("n_aux"),
                "ts": time.time() if now is None else now, "partition": self.partition,
                "input_offset": self.next_offset, "arms": arms}
        params = self.state.params(exp.row)
        # off-policy evaluation: deterministic policies need a floor (min_traffic) for positive propensities
        snap["ope"] = {"needs_floor": params.needs_floor_for_ope, "min_traffic": params.min_traffic,
                       "supported": params.supports_ope}
        if "bai_done" in summary:  # best-arm identification: Algorithm 2's good set, stop flag, answer now
            snap["bai"] = {"done": summary["bai_done"],
                           "good_set": [exp.variant_ids[s] for s in summary["good_arms"]],
                           "recommendation": [exp.variant_ids[s] for s in summary["recommendation"]]}
        return snap

    # ------------------------------------------------------------------ checkpoints
    def to_checkpoint(self, topic: str) -> bytes:
        """One self-consistent record: the state exactly as of input offset ``next_offset``."""
        meta = {"version": CHECKPOINT_VERSION, "topic": topic, "partition": self.partition,
                "next_offset": self.next_offset, "created": time.time(),
                "experiments": [e.to_json() for e in self.experiments.values()],
                "seen": self.seen.items(), "imp_by_request": self.imp_by_request.items(),
                "decided": self.decided.items()}
        meta_bytes = orjson.dumps(meta)
        return CHECKPOINT_MAGIC + struct.pack(">I", len(meta_bytes)) + meta_bytes + self.state.to_bytes()

    @staticmethod
    def checkpoint_offset(blob: bytes) -> int:
        meta, _ = _split_checkpoint(blob)
        return int(meta["next_offset"])

    @classmethod
    def from_checkpoint(cls, blob: bytes, config: ProcessorConfig | None = None) -> "ShardProcessor":
        from lola.kernels import BanditState

        meta, state_blob = _split_checkpoint(blob)
        proc = cls(int(meta["partition"]), config, state=BanditState.from_bytes(state_blob),
                   next_offset=int(meta["next_offset"]), restore_point=blob)
        for d in meta["experiments"]:
            exp = Experiment.from_json(d)
            proc.experiments[exp.experiment_id] = exp
            proc.by_row[exp.row] = exp
        proc.seen = IdWindow.from_items(proc.config.dedup_window, meta["seen"])
        proc.imp_by_request = IdWindow.from_items(proc.config.dedup_window, meta["imp_by_request"])
        keys, values = meta["decided"]
        proc.decided = IdWindow.from_items(proc.config.request_memory, [keys, [tuple(v) for v in values]])
        return proc


def warm_up() -> None:
    """Compile (or load from Numba's disk cache) every kernel the processor calls.

    The worker calls this before it joins its group, so a JIT compile never stalls a
    batch while partitions are assigned; tests and benchmarks call it before timing.
    """
    proc = ShardProcessor(0)
    head = b'{"type":"variant","experiment_id":"w","variant_id":"%s","text":"t"}'
    proc.process([(0, b"w", head % b"a"), (1, b"w", head % b"b"),
                  (2, b"w", b'{"type":"impression","experiment_id":"w","variant_id":"a","event_id":"i","ts":1}'),
                  (3, b"w", b'{"type":"decision_request","experiment_id":"w","request_id":"r"}')])
    proc.apply_prior("w", "b", 0.5)
    proc.snapshot("w")
    ShardProcessor.from_checkpoint(proc.to_checkpoint("w"))


def _split_checkpoint(blob: bytes) -> tuple[dict[str, Any], bytes]:
    if not blob or not blob.startswith(CHECKPOINT_MAGIC) or len(blob) < len(CHECKPOINT_MAGIC) + 4:
        raise LolaError("not a lola checkpoint record (bad magic)")
    (n,) = struct.unpack(">I", blob[8:12])
    meta = orjson.loads(blob[12:12 + n])
    if meta.get("version") != CHECKPOINT_VERSION:
        raise LolaError(f"checkpoint version {meta.get('version')} is not supported (this build reads {CHECKPOINT_VERSION})")
    return meta, blob[12 + n:]
