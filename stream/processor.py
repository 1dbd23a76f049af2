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

import math
import time
from typing import Any

import numpy as np

from lola.errors import EventError, LolaError
from lola.kernels.policy_table import TABLE as POLICY_TABLE
from lola.kernels.rng import mix_seed as _mix_seed
from lola.stream import events as ev
from lola.stream import lifecycle
from lola.stream.dedup import BatchView, DedupWindow, dedup_key
from lola.stream.lifecycle import AllowAll, VariantGate
from lola.stream.edge import EdgePlanner
from lola.stream.contextual_shard import ContextualShard
from lola.stream.shard import BatchOutput, DeadLetter, Experiment, PriorRequest, ProcessorConfig, IdWindow
from lola.stream.shard_checkpoint import ShardCheckpoints
from lola.stream.stats import StatsCache, WinnerRule

#: Records applied since the last restore point after which the shard takes a new one
#: itself (normally the worker's checkpoint, every checkpoint_interval_s, takes it).
JOURNAL_MAX_RECORDS = 500_000


class ShardProcessor(ShardCheckpoints):
    """State and processing of one partition of the events topic (see module docstring)."""

    def __init__(self, partition: int, config: ProcessorConfig | None = None, *,
                 state: Any = None, next_offset: int = 0, gate: VariantGate | None = None,
                 seen: DedupWindow | None = None) -> None:
        from lola.kernels import BanditState

        self.partition = partition
        self.config = config or ProcessorConfig()
        self.state = state if state is not None else BanditState(
            capacity_experiments=64, capacity_arms=4, feature_dim=self.config.feature_dim)
        self.experiments: dict[str, Experiment] = {}
        self.by_row: dict[int, Experiment] = {}
        self.next_offset = next_offset
        self.gate: VariantGate = gate if gate is not None else AllowAll()
        self.seen = seen if seen is not None else DedupWindow(self.config.dedup_window_s,
                                                              self.config.dedup_budget_bytes)
        self._batch_seen: BatchView | None = None  # the window as the batch being processed sees it
        self.legacy_seen: IdWindow | None = None  # bare event ids of a version-1 checkpoint (until expired)
        self.legacy_until = -math.inf
        self.clock = -math.inf  # log time: the newest Kafka timestamp processed (lifecycle sweeps)
        self.expiring: set[str] = set()  # experiments with an archive or retired arms waiting for eviction
        self.duplicates_seen = 0  # for the sampled duplicate dead letters
        self.imp_by_request = IdWindow(self.config.dedup_window)  # request_id -> impression ts
        self.decided = IdWindow(self.config.request_memory)     # request_id -> [variant, propensity, version]
        cfg = self.config  # contextual experiments (docs/contextual.md): their own kernel state and join window
        self.ctx = ContextualShard(cfg.context_user_dim, cfg.context_arm_dim, cfg.join_window_s, cfg.join_window_bytes)
        self.events_applied = 0
        self.stats = StatsCache(self.config.stats_interval_s, WinnerRule(*self.config.winner_rule))
        # Fault isolation (see process): the last restore point (a checkpoint blob, or None
        # for "fresh at _restore_offset") and everything applied since, in order.
        self._restore_blob: bytes | None = None  # held: without its window (lola.stream.shard_checkpoint)
        self._restore_seen: DedupWindow | None = None  # the window at the restore point (allocated once)
        self._restore_deltas: list[bytes] = []  # incremental checkpoints applied after it (lola.stream.delta)
        self._restore_offset = next_offset
        self.marks = 0  # full restore points taken (a delta never follows one it did not see)
        self._journal: list[tuple] = []
        self._journal_records = 0
        self.rollbacks = 0
        self.edge = EdgePlanner(self.config.edge_method, self.config.snapshot_interval_s, self.config.edge_valid_s)

    def experiment_caches(self) -> tuple[StatsCache, EdgePlanner]:
        """What the shard derives and keeps per experiment besides its registry: eviction calls
        each one's ``forget(experiment_id)``, an eviction wave its ``right_size()``."""
        return (self.stats, self.edge)

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
        requests: list[tuple[ev.DecisionRequest, Experiment, int, bytes | None, bytes | None, Any]] = []
        ctx = self.ctx
        counts = out.counts
        legacy = self.legacy_seen
        every = cfg.duplicate_dead_letter_every
        cap = cfg.max_clicks_per_impression
        experiments = self.experiments
        decode = ev.decode
        Impression, Click, Conversion = ev.Impression, ev.Click, ev.Conversion
        check_key = cfg.check_key
        max_bytes = cfg.max_message_bytes
        first_offset = None
        next_offset = self.next_offset
        # Decode first, so the de-duplication window is asked about the whole batch at once.
        events: list[Any] = []
        event_keys: list[Any] = []  # per record: (its key, the key of the impression it names) or None
        keys: list[str] = []
        for offset, key, value in records:
            if offset < next_offset:
                events.append(None); event_keys.append(None)
                continue
            try:
                event = decode(value, (key or b"") if check_key else None, max_bytes)
            except EventError as exc:
                # Kept as a new, never-raised error: the caught one's traceback (and its cause's)
                # holds this frame, which holds ``events``: a cycle only a full GC would free.
                events.append(EventError(exc.reason, exc.detail)); event_keys.append(None)
                continue
            events.append(event)
            kind = type(event)
            if kind is Impression or kind is Click or kind is Conversion:
                dkey = dedup_key(event.experiment_id, kind.__struct_config__.tag, event.event_id)
                keys.append(dkey)
                ikey = None
                if kind is not Impression and event.impression_id is not None:
                    ikey = dedup_key(event.experiment_id, "impression", event.impression_id)
                    keys.append(ikey)
                event_keys.append((dkey, ikey))
            else:
                event_keys.append(None)
        seen = self._batch_seen = self.seen.batch(keys)
        present, fresh = seen.present, seen.fresh
        dropped_ts, window_s = seen.dropped_ts, seen.window_s
        for i, (offset, key, value) in enumerate(records):
            if offset < next_offset:
                continue
            if first_offset is None:
                first_offset = offset
            next_offset = self.next_offset = offset + 1
            log_ts = now if timestamps is None else timestamps[i]
            if log_ts > self.clock:
                self.clock = log_ts
            event = events[i]
            if isinstance(event, EventError):  # decoding failed (not raised: see above)
                out.dead_letters.append(DeadLetter(offset, key, value, event.reason, event.detail))
                continue
            try:
                exp = experiments.get(event.experiment_id)
                kind = type(event)
                if kind is Impression or kind is Click or kind is Conversion:
                    if event.ts > (latest if timestamps is None else timestamps[i] + skew):
                        raise EventError("future_ts", f"ts {event.ts:.0f} is more than {skew:g}s ahead of "
                                                      f"{'now' if timestamps is None else 'its Kafka timestamp'}")
                    tag = kind.__struct_config__.tag
                    dkey, ikey = event_keys[i]
                    if dkey in present or dkey in fresh or (legacy is not None and event.event_id in legacy.map):
                        out.duplicates[tag] = out.duplicates.get(tag, 0) + 1
                        self.duplicates_seen += 1
                        if every and self.duplicates_seen % every == 0:
                            out.dead_letters.append(DeadLetter(offset, key, value, "duplicate",
                                                               f"{tag} {event.event_id[:80]} (1 in {every} sampled)"))
                        continue
                    if exp is None:
                        raise EventError("unknown_experiment", event.experiment_id[:80])
                    slot = exp.slots.get(event.variant_id)
                    if slot is None:
                        raise EventError("unknown_variant", f"{event.experiment_id[:60]}/{event.variant_id[:60]}")
                    ts = event.ts
                    if kind is Impression:
                        if ts <= dropped_ts or ts <= seen.clock - window_s:
                            self._check_stale(ts)  # raises "stale"
                        fresh[dkey] = ts
                        if ts > seen.clock:
                            seen.clock = ts
                        if event.request_id is not None:
                            self.imp_by_request.put(event.request_id, event.ts)
                        if exp.status != "running":
                            counts["ignored"] = counts.get("ignored", 0) + 1
                            continue
                        rows.append(exp.row); slots.append(slot); imps.append(1.0); clks.append(0.0); convs.append(0.0)
                        if exp.experiment_id in ctx:
                            ctx.outcome(exp.experiment_id, slot, event.request_id, None, event.event_id, 1.0, 0.0)
                    else:
                        self._check_attribution(event, exp, "late_click" if kind is Click else "late_conversion", ikey)
                        if ts <= dropped_ts or ts <= seen.clock - window_s:
                            self._check_stale(ts)  # raises "stale"
                        if kind is Click and ikey is not None:
                            if ikey in present or ikey in fresh:
                                n_clicks = seen.clicks(ikey)
                                if n_clicks >= cap:
                                    raise EventError("click_cap", f"impression {event.impression_id[:80]} has "
                                                                  f"{n_clicks} click(s) (max_clicks_per_impression)")
                                seen.add_click(ikey)
                        fresh[dkey] = ts
                        if ts > seen.clock:
                            seen.clock = ts
                        if exp.status != "running":
                            counts["ignored"] = counts.get("ignored", 0) + 1
                            continue
                        rows.append(exp.row); slots.append(slot); imps.append(0.0)
                        if kind is Click:
                            clks.append(1.0); convs.append(0.0)
                        else:
                            clks.append(0.0); convs.append(event.value)
                        if exp.experiment_id in ctx:
                            reward = 1.0 if kind is Click else self.state.params(exp.row).conversion_weight * event.value
                            ctx.outcome(exp.experiment_id, slot, event.request_id, event.impression_id,
                                        event.event_id, 0.0, reward)
                    if event.ts > exp.max_ts:
                        exp.max_ts = event.ts
                    exp.version += 1
                    out.dirty.add(exp.experiment_id)
                elif kind is ev.DecisionRequest:
                    if exp is None:
                        raise EventError("unknown_experiment", event.experiment_id[:80])
                    u = (ctx.featurize(exp.experiment_id, event.context, event.user_id)
                         if exp.experiment_id in ctx else None)
                    requests.append((event, exp, offset, key, value, u))
                elif kind is ev.ExperimentEvent:
                    lifecycle.apply_experiment_event(self, event, exp, out)
                else:  # Variant
                    self._apply_variant(event, exp, out)
                counts[kind.__name__] = counts.get(kind.__name__, 0) + 1
            except EventError as exc:
                out.dead_letters.append(DeadLetter(offset, key, value, exc.reason, exc.detail))
        self.seen.commit(seen)
        self._batch_seen = None
        seen = self.seen
        if rows:
            n = len(rows)
            update(self.state, np.asarray(rows, dtype=np.int64), np.asarray(slots, dtype=np.int64),
                   np.asarray(imps, dtype=np.float64), np.asarray(clks, dtype=np.float64),
                   np.asarray(convs, dtype=np.float64))
            self.events_applied += n
        if ctx.experiments:
            ctx.flush()  # train on joined outcomes; FALCON refits go to their thread
        if requests:
            self._decide(requests, out, now, first_offset or 0)
        lifecycle.sweep(self, out)
        if legacy is not None and seen.horizon > self.legacy_until:
            self.legacy_seen = None  # every legacy id is now below the horizon (stale anyway)
        out.budget_evictions = seen.budget_evictions
        return out

    def _check_stale(self, ts: float) -> None:
        horizon = (self._batch_seen or self.seen).horizon
        if ts <= horizon:
            raise EventError("stale", f"ts {ts:.0f} is at or below the de-duplication horizon {horizon:.0f} "
                                      f"(dedup_window_s / dedup_budget_bytes)")

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
            for kind, n in part.duplicates.items():
                out.duplicates[kind] = out.duplicates.get(kind, 0) + n
            out.dirty |= part.dirty
            out.evicted += part.evicted
            out.budget_evictions = part.budget_evictions
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

    def _rollback(self) -> None:
        """Back to the restore point, then re-apply the journal (its outputs were emitted already)."""
        if self._restore_blob is None:
            fresh = ShardProcessor(self.partition, self.config, next_offset=self._restore_offset, gate=self.gate)
        else:
            fresh = ShardProcessor.from_chain(self._restore_blob, self._restore_deltas, self.config, gate=self.gate,
                                              held=self._restore_seen.copy())
        journal, blob, start, rollbacks = self._journal, self._restore_blob, self._restore_offset, self.rollbacks
        backup = self._restore_seen
        marks = self.marks
        fresh.stats = self.stats  # statistics and declared winners are outputs, not state
        self.ctx.close()
        self.__dict__.update(fresh.__dict__)
        self._restore_blob, self._restore_offset, self.rollbacks, self.marks = blob, start, rollbacks + 1, marks
        self._restore_seen = backup
        for entry in journal:
            if entry[0] == 0:
                self._process(entry[1], entry[2], entry[3])
            elif entry[0] == 1:
                self._apply_prior(*entry[1:])
            elif entry[0] == 2:
                self.next_offset = max(self.next_offset, entry[1] + 1)
            elif entry[0] == 4:
                self._set_variant_state(*entry[1:])
            else:
                self.next_offset = entry[1]
        self._journal = journal
        self._journal_records = sum(len(e[1]) for e in journal if e[0] == 0)

    def _check_attribution(self, event: Any, exp: Experiment, reason: str, ikey: str | None) -> None:
        """Raise ``reason`` for an outcome outside the attribution window (``ikey``: the de-dup
        key of the impression it names, None without one)."""
        window = exp.attribution_window_s
        ref = None
        impression_id = getattr(event, "impression_id", None)
        if ikey is not None:
            ref = (self._batch_seen or self.seen).get(ikey)
            if ref is None and self.legacy_seen is not None:
                ref = self.legacy_seen.get(impression_id)
                if ref is not None and ref < 0:
                    ref = None  # that legacy id was a click or conversion, not an impression
        request_id = getattr(event, "request_id", None)
        if ref is None and request_id is not None:
            ref = self.imp_by_request.get(request_id)
        if ref is not None:
            if event.ts - ref > window:
                raise EventError(reason, f"{event.ts - ref:.0f}s after its impression > window {window:g}s")
        elif event.ts < exp.max_ts - window:
            raise EventError(reason, f"{exp.max_ts - event.ts:.0f}s older than the newest event > window {window:g}s")

    def _apply_variant(self, event: ev.Variant, exp: Experiment | None, out: BatchOutput) -> None:
        lifecycle.apply_variant(self, event, exp, out)

    def set_variant_state(self, experiment_id: str, variant_id: str, state: str, reason: str | None = None) -> bool:
        """Move a variant to ``state`` (pending -> active/blocked after an off-path check, a
        re-check, ...). False if the variant is unknown, retired (final) or already there.
        The caller publishes the experiment's snapshot when this returns True."""
        if state not in ev.VARIANT_STATES:
            raise LolaError(f"variant state must be one of {', '.join(ev.VARIANT_STATES)}, got {state!r}")
        self._journal.append((4, experiment_id, variant_id, state, reason))
        return self._set_variant_state(experiment_id, variant_id, state, reason)

    def _set_variant_state(self, experiment_id: str, variant_id: str, state: str, reason: str | None) -> bool:
        exp = self.experiments.get(experiment_id)
        slot = exp.slots.get(variant_id) if exp else None
        if slot is None:
            return False
        return lifecycle.set_state(self, exp, slot, state, reason)

    def _decide(self, requests: list, out: BatchOutput, now: float, first_offset: int) -> None:
        from lola.kernels import select

        fresh: list[tuple[ev.DecisionRequest, Experiment]] = []
        ctx_fresh: list[tuple[ev.DecisionRequest, Experiment, Any]] = []
        servable: dict[int, bool] = {}  # per experiment row: has an active arm (once per batch)
        decided = self.decided.map
        for req, exp, offset, key, value, u in requests:
            prior = decided.get(req.request_id)
            row = exp.row
            ok = servable.get(row)
            if ok is None:
                ok = servable[row] = bool(self.state.active[row, :int(self.state.n_arms[row])].any())
            if prior is not None:  # upstream retry: answer with the same decision again
                out.duplicates["decision_request"] = out.duplicates.get("decision_request", 0) + 1
                policy = self.ctx.policy_name(exp.experiment_id) if u is not None else exp.policy
                out.decisions.append((exp.experiment_id.encode(), ev.encode_decision(
                    req.request_id, exp.experiment_id, prior[0], prior[1], policy, prior[2], now)))
            elif exp.status == "archived":
                out.dead_letters.append(DeadLetter(offset, key, value, "experiment_archived", exp.experiment_id[:80]))
            elif exp.status == "stopped":  # the best arm only, with certainty
                if exp.best is None:
                    out.dead_letters.append(DeadLetter(offset, key, value, "no_active_variant",
                                                       exp.experiment_id[:80]))
                    continue
                self.decided.put(req.request_id, (exp.best, 1.0, exp.version))
                out.decisions.append((exp.experiment_id.encode(), ev.encode_decision(
                    req.request_id, exp.experiment_id, exp.best, 1.0, exp.policy, exp.version, now)))
            elif not ok:
                out.dead_letters.append(DeadLetter(offset, key, value, "no_active_variant",
                                                   exp.experiment_id[:80]))
            elif u is not None:
                ctx_fresh.append((req, exp, u))
            else:
                fresh.append((req, exp))
        if ctx_fresh:
            self._decide_contextual(ctx_fresh, out, now, first_offset)
        if not fresh:
            return
        rows = np.fromiter((exp.row for _, exp in fresh), dtype=np.int64, count=len(fresh))
        chosen, propensity = select(self.state, rows, _mix_seed(self.config.seed, self.partition, first_offset))
        for (req, exp), slot, p in zip(fresh, chosen.tolist(), propensity.tolist()):
            variant_id = exp.variant_ids[slot]
            self.decided.put(req.request_id, (variant_id, p, exp.version))
            out.decisions.append((exp.experiment_id.encode(), ev.encode_decision(
                req.request_id, exp.experiment_id, variant_id, p, exp.policy, exp.version, now)))

    def _decide_contextual(self, fresh: list, out: BatchOutput, now: float, first_offset: int) -> None:
        """Contextual experiments: one kernel call with each request's u; the context waits in the join window."""
        slots, props = self.ctx.decide([exp.experiment_id for _, exp, _ in fresh], [req.request_id for req, _, _ in fresh],
                                       [u for _, _, u in fresh], _mix_seed(self.config.seed, self.partition,
                                                                           first_offset, 1), now)
        for (req, exp, _), slot, p in zip(fresh, slots, props):
            variant_id = exp.variant_ids[slot]
            self.decided.put(req.request_id, (variant_id, p, exp.version))
            out.decisions.append((exp.experiment_id.encode(), ev.encode_decision(
                req.request_id, exp.experiment_id, variant_id, p, self.ctx.policy_name(exp.experiment_id),
                exp.version, now)))

    # ------------------------------------------------------------------ priors
    def apply_prior(self, experiment_id: str, variant_id: str, prior: float, features: Any = None) -> bool:
        """Apply a prior (with the model's arm features, if any) from the prior provider; False if the arm is gone."""
        self._journal.append((1, experiment_id, variant_id, prior, features))
        return self._apply_prior(experiment_id, variant_id, prior, features)

    def _apply_prior(self, experiment_id: str, variant_id: str, prior: float, features: Any = None) -> bool:
        exp = self.experiments.get(experiment_id)
        slot = exp.slots.get(variant_id) if exp else None
        if slot is None:
            return False
        lifecycle.set_model_features(self, exp, slot, features)  # first: the contextual prior uses the arm's row
        self.state.set_prior(exp.row, slot, float(prior))
        if experiment_id in self.ctx:
            self.ctx.set_prior(experiment_id, slot, float(prior))
        exp.version += 1
        return True

    def missing_priors(self) -> list[PriorRequest]:
        """Active arms without a prior (asked again after a restore)."""
        out = []
        for exp in self.experiments.values():
            for slot, vid in enumerate(exp.variant_ids):
                if exp.states[slot] in ("active", "pending") and not self.state.has_prior[exp.row, slot]:
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
                                             "serving_share")}
            slot = arm["slot"]
            arms[vid]["active"] = lifecycle.served(exp, slot)
            if exp.status == "stopped":
                arms[vid]["serving_share"] = 1.0 if vid == exp.best else 0.0
            elif exp.status == "archived":
                arms[vid]["serving_share"] = 0.0
            arms[vid]["state"], arms[vid]["state_reason"] = exp.states[slot], exp.reasons[slot]
            arms[vid]["text"] = exp.texts[slot][:ev.SNAPSHOT_TEXT_CHARS]
        snap = {"v": ev.SCHEMA_VERSION, "type": "policy_snapshot", "experiment_id": experiment_id,
                "policy": exp.policy, "policy_version": exp.version, "n_aux": summary.get("n_aux"),
                "ts": time.time() if now is None else now, "partition": self.partition,
                "input_offset": self.next_offset, "arms": arms, "status": exp.status}
        params = self.state.params(exp.row)
        # off-policy evaluation: deterministic policies need a floor (min_traffic) for positive propensities
        snap["ope"] = {"needs_floor": params.needs_floor_for_ope, "min_traffic": params.min_traffic,
                       "supported": params.supports_ope}
        if "bai_done" in summary:  # best-arm identification: Algorithm 2's good set, stop flag, answer now
            snap["bai"] = {"done": summary["bai_done"],
                           "good_set": [exp.variant_ids[s] for s in summary["good_arms"]],
                           "recommendation": [exp.variant_ids[s] for s in summary["recommendation"]]}
        # statistics, P(best) and the winner rule (lola.stream.stats), recomputed on change at a capped cadence
        snap.update(self.stats.extras(self.state, exp, summary, snap.get("bai"),
                                      POLICY_TABLE[exp.policy].uses_prior, snap["ts"]))
        snap["edge"] = self.edge.block(self.state, exp.row, exp.variant_ids, snap, exp.best)  # edge serving (stream.edge)
        if experiment_id in self.ctx:
            snap["contextual"] = self.ctx.snapshot(experiment_id)
        return snap

def warm_up() -> None:
    """Compile (or load from Numba's disk cache) every kernel the processor calls.

    The worker calls this before it joins its group, so a JIT compile never stalls a
    batch while partitions are assigned; tests and benchmarks call it before timing.
    """
    from lola.stream.delta import ChainTracker

    proc = ShardProcessor(0, ProcessorConfig(dedup_window_s=10.0))
    head = b'{"type":"variant","experiment_id":"w","variant_id":"%s","text":"t","settings":{"attribution_window_s":1}}'
    proc.process([(0, b"w", head % b"a"), (1, b"w", head % b"b"),
                  (2, b"w", b'{"type":"impression","experiment_id":"w","variant_id":"a","event_id":"i","ts":1}'),
                  (3, b"w", b'{"type":"click","experiment_id":"w","variant_id":"a","event_id":"c","ts":1,'
                            b'"impression_id":"i"}'),
                  (4, b"w", b'{"type":"decision_request","experiment_id":"w","request_id":"r"}')], now=1.0)
    proc.apply_prior("w", "b", 0.5)
    proc.snapshot("w")
    proc.mark()
    tracker = ChainTracker(proc)
    # the lifecycle's paths too (archive, the window's expiry, eviction and compaction, a
    # delta): compiled here rather than in the middle of a batch, and paid before the
    # worker's first checkpoint rather than at its first archive wave
    proc.process([(5, b"w", b'{"type":"experiment","experiment_id":"w","action":"archive"}'),
                  (6, b"v", b'{"type":"variant","experiment_id":"v","variant_id":"a","text":"t"}')],
                 now=2.0, timestamps=[2.0, 2.0])
    out = proc.process([(7, b"v", b'{"type":"impression","experiment_id":"v","variant_id":"a","event_id":"j",'
                                  b'"ts":60}')], now=60.0, timestamps=[60.0])
    delta = proc.mark_delta(tracker, {"epoch": 1, "owner": "w", "j": 1, "topic": "w"})
    if out.evicted != ["w"] or delta is None:  # the warm-up's own check: it must reach those paths
        raise LolaError("warm-up: the archive, eviction and delta paths did not run")
    ShardProcessor.from_checkpoint(proc.to_checkpoint("w"))
