"""Experiment and variant lifecycle of one partition-shard (pure: no Kafka, no I/O).

The rules (docs/operations/lifecycle.md has the user's view):

* Experiment ``status``: ``running`` (serves and learns), ``paused`` (serves with its
  allocation frozen: counting events are de-duplicated but not applied), ``stopped``
  (serves only its best arm, with propensity 1, and does not learn), ``archived``
  (decision requests are dead-lettered ``experiment_archived``, counting events are
  ignored; a final snapshot is published and, once the attribution window has passed
  in log time, the experiment is evicted: its row is freed and a tombstone replaces its
  snapshot). Allowed: running<->paused, running/paused->stopped, stopped->running
  (``resume``), anything->archived; archived is final.
* Variant ``state``: ``pending`` (waits for an off-path check), ``active`` (served),
  ``blocked`` (never served; the gate's reason is kept), ``retired`` (never served, kept
  for the attribution window of late clicks, then its arm column is freed). Only
  ``active`` arms are served. retired is final.
* "Log time" is the newest Kafka record timestamp the shard has processed, so evictions
  happen at the same records on a replay (deterministic restore).

The :class:`VariantGate` decides a new variant's first state (issue 25 plugs its
compliance checker in); :meth:`ShardProcessor.set_variant_state` moves a variant later.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

from lola.errors import CapacityError, ConfigError, EventError, KernelInputError
from lola.kernels.params import ExperimentParams
from lola.kernels.policy_table import TABLE as POLICY_TABLE
from lola.stream import events as ev
from lola.stream.features import model_features, text_features
from lola.stream.shard import BatchOutput, Experiment, PriorRequest
from lola.stream.warm_start import linear_setup

#: The shard (lola.stream.processor.ShardProcessor; not imported: it imports this module).
Shard = Any

_TRANSITIONS = {  # action -> statuses it applies to, and the status it leads to
    "pause": (("running",), "paused"),
    "resume": (("paused", "stopped"), "running"),
    "stop": (("running", "paused"), "stopped"),
    "archive": (("running", "paused", "stopped"), "archived"),
}
#: Settings an ``update`` cannot change (a new experiment is needed).
FIXED_SETTINGS = ("policy", "warm_start", "contextual")


@runtime_checkable
class VariantGate(Protocol):
    """Decides the first state of a new variant: ``active``, ``blocked`` or ``pending``, with a reason."""

    def check(self, experiment_id: str, variant_id: str, text: str) -> tuple[str, str | None]: ...


class AllowAll:
    """The default gate: every variant is active at once."""

    def check(self, experiment_id: str, variant_id: str, text: str) -> tuple[str, str | None]:
        return "active", None


def gate_state(gate: VariantGate, experiment_id: str, variant_id: str, text: str) -> tuple[str, str | None]:
    """The gate's answer, checked: a gate that returns something else is a bug, reported as blocked."""
    try:
        state, reason = gate.check(experiment_id, variant_id, text)
    except Exception as exc:  # noqa: BLE001 - a failing gate must not stop the partition
        return "pending", f"gate error: {type(exc).__name__}: {exc}"[:200]
    if state not in ("active", "blocked", "pending"):
        return "blocked", f"gate returned an invalid state {state!r}"[:200]
    return state, (None if reason is None else str(reason)[:200])


def served(exp: Experiment, slot: int) -> bool:
    """Is the arm at ``slot`` served now (the snapshot's ``active``)?"""
    if exp.states[slot] != "active" or exp.status == "archived":
        return False
    return exp.status != "stopped" or exp.variant_ids[slot] == exp.best


def best_variant(proc: Shard, exp: Experiment) -> str | None:
    """The arm a stopped experiment serves: BAI's recommendation if it has one, else the
    most-played active arm (the recommendation rule of adaptive policies: they play the arm
    they believe best the most), then the higher CTR, then the lower slot."""
    st = proc.state
    row = exp.row
    active = [s for s, state in enumerate(exp.states) if state == "active"]
    if not active:
        return None
    if st.params(row).policy in ("bai", "llm_bai"):
        rec = [s for s in st.bai_recommendation(row) if s in active]
        if rec:
            return exp.variant_ids[rec[0]]
    best = max(active, key=lambda s: (st.impressions[row, s], st.clicks[row, s] / max(st.impressions[row, s], 1.0), -s))
    return exp.variant_ids[best]


def apply_variant(proc: Shard, event: ev.Variant, exp: Experiment | None, out: BatchOutput) -> None:
    """Add or retire a variant (raises EventError for a dead letter; a blocked variant is added, then noncompliant)."""
    if event.action == "retire":
        if exp is None:
            raise EventError("unknown_experiment", event.experiment_id[:80])
        slot = exp.slots.get(event.variant_id)
        if slot is None:
            raise EventError("unknown_variant", f"{event.experiment_id[:60]}/{event.variant_id[:60]}")
        if set_state(proc, exp, slot, "retired", "retired by a variant event"):
            out.dirty.add(exp.experiment_id)
        return
    if exp is None:
        exp = create_experiment(proc, event.experiment_id, event.settings)
    elif exp.status == "archived":
        raise EventError("invalid_transition", "variant add: the experiment is archived")
    if event.variant_id in exp.slots:
        return  # adding a known variant again is a no-op (idempotent upstream retries)
    if len(exp.variant_ids) >= proc.config.max_arms:
        raise EventError("capacity", f"experiment has {len(exp.variant_ids)} variants "
                                     f"(max_arms_per_experiment {proc.config.max_arms})")
    # LinUCB arms get their features with the arm (lola.stream.features), so they are
    # servable at once; the state's d, not the config's, so a restored shard keeps its own.
    features = (text_features(event.text, proc.state.feature_dim)
                if POLICY_TABLE[exp.policy].needs_features else None)
    try:
        slot = proc.state.add_arm(exp.row, features=features)
    except (CapacityError, KernelInputError) as exc:
        raise EventError("capacity", str(exc)[:120]) from None
    if exp.experiment_id in proc.ctx:  # a contextual experiment's arm (lola.stream.contextual_shard)
        proc.ctx.add_arm(exp.experiment_id, event.text)
    state, reason = gate_state(proc.gate, exp.experiment_id, event.variant_id, event.text)
    exp.slots[event.variant_id] = slot
    exp.variant_ids.append(event.variant_id)
    exp.texts.append(event.text)
    exp.states.append(state)
    exp.reasons.append(reason)
    if state != "active":
        _set_served(proc, exp, slot, False)
    exp.version += 1
    out.dirty.add(exp.experiment_id)
    if state == "blocked":
        raise EventError("noncompliant", (reason or "blocked by the variant gate")[:300])
    out.prior_requests.append(PriorRequest(proc.partition, exp.experiment_id, event.variant_id, event.text,
                                           tuple(exp.texts[:-1])))


def create_experiment(proc: Shard, experiment_id: str, settings_in: dict | None) -> Experiment:
    """Register a new experiment (an ``experiment`` create, or a first ``variant`` add)."""
    if len(proc.experiments) >= proc.config.max_experiments:
        raise EventError("capacity", f"partition holds {len(proc.experiments)} experiments "
                                     f"(max_experiments_per_partition {proc.config.max_experiments})")
    settings = dict(settings_in or {})
    window = float(settings.pop("attribution_window_s", proc.config.attribution_window_s))
    if not window > 0:
        raise EventError("invalid_settings", "attribution_window_s must be > 0")
    contextual = settings.pop("contextual", None)
    ctx_spec = proc.ctx.parse(contextual) if contextual is not None else None
    policy = settings.get("policy", proc.config.default_policy)
    # The worker's defaults fill only what the chosen policy reads (docs/policies.md);
    # a setting it does not read, sent by the producer, is invalid_settings.
    reads = POLICY_TABLE[policy].accepts if policy in POLICY_TABLE else ()
    defaults = {name: value for name, value in (("alpha", proc.config.default_alpha),
                                                 ("n_aux", proc.config.default_n_aux)) if name in reads}
    warm = linear_setup(policy, settings.pop("warm_start", None), proc.config.warm_starts,
                        proc.state.feature_dim)
    params = {"policy": policy, **defaults, **settings}
    try:
        row = proc.state.add_experiment(ExperimentParams.from_dict(params))
    except CapacityError as exc:
        raise EventError("capacity", str(exc)[:120]) from None
    except (ConfigError, TypeError, ValueError) as exc:
        raise EventError("invalid_settings", str(exc)[:160]) from None
    if warm is not None:
        proc.state.warm_start_linear(row, *warm)
    exp = Experiment(experiment_id, row, proc.state.params(row).policy, window)
    if ctx_spec is not None:
        proc.ctx.add_experiment(exp.experiment_id, ctx_spec)
    proc.experiments[exp.experiment_id] = exp
    proc.by_row[row] = exp
    return exp


def set_model_features(proc: Shard, exp: Experiment, slot: int, z: Any) -> None:
    """The prior model's arm features (``z``, its projected embedding) for ``llm_linucb`` arms and
    contextual arms in ``model`` mode, set when the arm's prior arrives (docs/policies.md):
    updates before that stay in A and b under the hashed text row, later ones use the model's.
    Plain ``linucb`` keeps hashed text features (the baseline without the LLM). ``z=None``: nothing."""
    if z is None:
        return
    p = POLICY_TABLE[exp.policy]
    if p.needs_features and p.uses_prior and proc.state.feature_dim:
        proc.state.set_features(exp.row, slot, model_features(z, proc.state.feature_dim))
    if exp.experiment_id in proc.ctx:
        proc.ctx.set_model_features(exp.experiment_id, slot, z)


def set_state(proc: Shard, exp: Experiment, slot: int, state: str, reason: str | None) -> bool:
    """Move a variant to ``state``; False if not allowed (retired is final) or unchanged."""
    old = exp.states[slot]
    if old == "retired" or state not in ev.VARIANT_STATES or (old == state and exp.reasons[slot] == reason):
        return False
    exp.states[slot], exp.reasons[slot] = state, reason
    _set_served(proc, exp, slot, state == "active")
    if state == "retired":
        exp.retired_at[exp.variant_ids[slot]] = proc.clock
        proc.expiring.add(exp.experiment_id)
    if exp.status == "stopped" and (exp.best is None or exp.best == exp.variant_ids[slot]):
        exp.best = best_variant(proc, exp)
    exp.version += 1
    return True


def apply_experiment_event(proc: Shard, event: ev.ExperimentEvent, exp: Experiment | None,
                           out: BatchOutput) -> None:
    """Apply one ``experiment`` event (raises EventError for a dead letter)."""
    action = event.action
    if action == "create":
        if exp is None:
            create_experiment(proc, event.experiment_id, event.settings)
            out.dirty.add(event.experiment_id)
        elif exp.status == "archived":
            raise EventError("invalid_transition", "create: the experiment is archived (until it is evicted)")
        return  # creating an existing experiment again is a no-op (idempotent upstream retries)
    if exp is None:
        raise EventError("unknown_experiment", event.experiment_id[:80])
    if action == "update":
        if exp.status == "archived":
            raise EventError("invalid_transition", "update: the experiment is archived")
        _update(proc, exp, dict(event.settings or {}))
    else:
        allowed, to = _TRANSITIONS[action]
        if exp.status == to:
            return  # again: no-op
        if exp.status not in allowed:
            raise EventError("invalid_transition", f"{action}: the experiment is {exp.status}")
        exp.status, exp.status_reason = to, event.reason
        exp.best = best_variant(proc, exp) if to == "stopped" else None
        if to == "archived":
            exp.archived_at = proc.clock
            proc.expiring.add(exp.experiment_id)
    exp.version += 1
    out.dirty.add(exp.experiment_id)


def _update(proc: Shard, exp: Experiment, settings: dict) -> None:
    fixed = sorted(set(settings) & set(FIXED_SETTINGS))
    if fixed:
        raise EventError("invalid_settings", f"cannot change {', '.join(fixed)} of a running experiment")
    window = settings.pop("attribution_window_s", None)
    if settings:
        current = proc.state.params(exp.row)
        try:
            ExperimentParams.from_dict({"policy": current.policy, **settings})  # read by the policy, in bounds
            proc.state.set_params(exp.row, dataclasses.replace(current, **settings))
        except (ConfigError, TypeError, ValueError) as exc:
            raise EventError("invalid_settings", str(exc)[:160]) from None
    if window is not None:
        exp.attribution_window_s = float(window)


#: Experiments evicted by one sweep after which the registry's dicts and sets are rebuilt:
#: Python's never shrink when keys are deleted, so after an archive wave they would keep
#: the wave's size (about 1.5 MB per partition at 12k experiments).
RIGHT_SIZE_AFTER = 1024


def sweep(proc: Shard, out: BatchOutput) -> None:
    """Evict archived experiments and free retired arms whose attribution window has passed (log time)."""
    if not proc.expiring:
        return
    evicted = len(out.evicted)
    _sweep(proc, out)
    if len(out.evicted) - evicted >= RIGHT_SIZE_AFTER:
        proc.experiments, proc.by_row, proc.expiring = dict(proc.experiments), dict(proc.by_row), set(proc.expiring)
        for cache in proc.experiment_caches():
            cache.right_size()


def _sweep(proc: Shard, out: BatchOutput) -> None:
    clock = proc.clock
    for exp_id in sorted(proc.expiring):
        exp = proc.experiments.get(exp_id)
        if exp is None:
            proc.expiring.discard(exp_id)
            continue
        window = exp.attribution_window_s
        if exp.archived_at is not None:
            if exp.archived_at + window <= clock:
                evict(proc, exp)
                out.evicted.append(exp_id)
                out.dirty.discard(exp_id)
                proc.expiring.discard(exp_id)
            continue
        for vid, at in sorted(exp.retired_at.items()):
            # a contextual experiment keeps its retired arms' columns until it is archived: its
            # model's arm features are tied to the slots (bounded by max_arms_per_experiment)
            if at + window <= clock and exp.experiment_id not in proc.ctx:
                _free_arm(proc, exp, vid)
                out.dirty.add(exp_id)
        if not exp.retired_at or exp.experiment_id in proc.ctx:
            proc.expiring.discard(exp_id)


def evict(proc: Shard, exp: Experiment) -> None:
    """Forget an archived experiment: its row is freed (the last row moves into it), its
    contextual model row too (lola.stream.contextual_shard; that row is reused, not moved)."""
    moved = proc.state.remove_experiment(exp.row)
    proc.ctx.remove_experiment(exp.experiment_id)
    for cache in proc.experiment_caches():
        cache.forget(exp.experiment_id)
    del proc.experiments[exp.experiment_id]
    del proc.by_row[exp.row]
    if moved is not None:
        other = proc.by_row.pop(moved)
        other.row = exp.row
        proc.by_row[exp.row] = other


def _set_served(proc: Shard, exp: Experiment, slot: int, active: bool) -> None:
    """Serve an arm or not, in the bandit state and in a contextual experiment's model."""
    proc.state.set_arm_active(exp.row, slot, active)
    if exp.experiment_id in proc.ctx:
        proc.ctx.set_arm_active(exp.experiment_id, slot, active)


def _free_arm(proc: Shard, exp: Experiment, vid: str) -> None:
    slot = exp.slots[vid]
    proc.state.remove_arm(exp.row, slot)
    for seq in (exp.variant_ids, exp.texts, exp.states, exp.reasons):
        del seq[slot]
    del exp.retired_at[vid]
    exp.slots = {v: i for i, v in enumerate(exp.variant_ids)}
    exp.version += 1
