"""The records one partition-shard works with: its settings, the experiment registry
entry, the outputs of a batch, a prior request and the bounded id window.

Plain data, no kernels and no I/O; :mod:`lola.stream.processor` applies events to them.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, fields
from itertools import islice
from typing import Any

from lola.errors import LolaError
from lola.stream.context import redact


def _setting_default(name: str) -> Any:
    from lola.stream.settings import StreamSettings

    return StreamSettings.model_fields[name].default


@dataclass(frozen=True)
class ProcessorConfig:
    """Per-shard processing settings (a subset of StreamSettings).

    The defaults are read from :class:`lola.stream.settings.StreamSettings`, the one
    source of every default, so the two can never drift apart.
    """

    dedup_window: int = _setting_default("dedup_window")
    request_memory: int = min(_setting_default("dedup_window"), 20_000)
    attribution_window_s: float = _setting_default("attribution_window_s")
    max_message_bytes: int = _setting_default("max_message_bytes")
    default_policy: str = _setting_default("default_policy")
    default_alpha: float = _setting_default("default_alpha")
    default_n_aux: float = _setting_default("default_n_aux")
    seed: int = _setting_default("seed")
    feature_dim: int = _setting_default("feature_dim")
    #: LinUCB warm starts by name, (X, r) each (lola.stream.warm_start; the worker loads them).
    warm_starts: dict = field(default_factory=dict, compare=False)
    max_future_skew_s: float = _setting_default("max_future_skew_s")
    check_key: bool = True
    dedup_window_s: float = _setting_default("dedup_window_s")
    dedup_budget_bytes: int = _setting_default("dedup_budget_bytes")
    duplicate_dead_letter_every: int = _setting_default("duplicate_dead_letter_every")
    max_clicks_per_impression: int = _setting_default("max_clicks_per_impression")
    max_experiments: int = _setting_default("max_experiments_per_partition")  # _SETTING_NAMES
    max_arms: int = _setting_default("max_arms_per_experiment")
    snapshot_interval_s: float = _setting_default("snapshot_interval_s")
    edge_method: str = _setting_default("edge_method")
    edge_valid_s: float = _setting_default("edge_valid_s")
    context_user_dim: int = _setting_default("context_user_dim")
    context_arm_dim: int = _setting_default("context_arm_dim")
    join_window_s: float = _setting_default("join_window_s")
    join_window_bytes: int = _setting_default("join_window_bytes")
    stats_interval_s: float = _setting_default("stats_interval_s")
    #: (p_best, max_loss, min_impressions) of lola.stream.stats.WinnerRule
    winner_rule: tuple = (_setting_default("winner_p_best"), _setting_default("winner_max_loss"),
                          _setting_default("winner_min_impressions"))

    @classmethod
    def from_settings(cls, settings: Any) -> "ProcessorConfig":
        names = {f.name for f in fields(cls)} - {"request_memory", "warm_starts", "check_key", "winner_rule"}
        return cls(request_memory=min(settings.dedup_window, 20_000),
                   winner_rule=(settings.winner_p_best, settings.winner_max_loss, settings.winner_min_impressions),
                   **{name: getattr(settings, _SETTING_NAMES.get(name, name)) for name in names})


#: ProcessorConfig fields named differently in StreamSettings.
_SETTING_NAMES = {"max_experiments": "max_experiments_per_partition", "max_arms": "max_arms_per_experiment"}


@dataclass
class Experiment:
    """Registry entry: where an experiment lives in the BanditState and its variants."""

    experiment_id: str
    row: int
    policy: str
    attribution_window_s: float
    variant_ids: list[str] = field(default_factory=list)  # slot -> variant_id
    texts: list[str] = field(default_factory=list)        # slot -> text (for priors)
    slots: dict[str, int] = field(default_factory=dict)   # variant_id -> slot
    version: int = 0                                      # policy_version
    max_ts: float = -math.inf
    # Lifecycle (lola.stream.lifecycle, docs/operations/lifecycle.md)
    states: list[str] = field(default_factory=list)       # slot -> pending/active/blocked/retired
    reasons: list[str | None] = field(default_factory=list)  # slot -> why (blocked, retired by whom)
    retired_at: dict[str, float] = field(default_factory=dict)  # variant_id -> log time it was retired
    status: str = "running"                               # running/paused/stopped/archived
    status_reason: str | None = None
    best: str | None = None                               # a stopped experiment's one served variant
    archived_at: float | None = None                      # log time of the archive action

    def to_json(self) -> dict[str, Any]:
        return {"id": self.experiment_id, "row": self.row, "policy": self.policy,
                "win": self.attribution_window_s, "variants": self.variant_ids, "texts": self.texts,
                "version": self.version, "max_ts": self.max_ts if math.isfinite(self.max_ts) else None,
                "states": self.states, "reasons": self.reasons, "retired_at": self.retired_at,
                "status": self.status, "status_reason": self.status_reason, "best": self.best,
                "archived_at": self.archived_at}

    @classmethod
    def from_json(cls, d: dict[str, Any], active: list[bool] | None = None) -> "Experiment":
        """``active``: the state's flags per slot, for a checkpoint written before variant states."""
        exp = cls(d["id"], d["row"], d["policy"], d["win"], list(d["variants"]), list(d["texts"]),
                  version=d["version"], max_ts=-math.inf if d["max_ts"] is None else d["max_ts"])
        exp.slots = {v: i for i, v in enumerate(exp.variant_ids)}
        if "states" in d:
            exp.states, exp.reasons = list(d["states"]), list(d["reasons"])
            exp.retired_at = dict(d["retired_at"])
            exp.status, exp.status_reason, exp.best = d["status"], d["status_reason"], d["best"]
            exp.archived_at = d["archived_at"]
        else:  # pre-lifecycle checkpoint: active arms are active, the others retired (no eviction clock)
            flags = active or [True] * len(exp.variant_ids)
            exp.states = ["active" if a else "retired" for a in flags]
            exp.reasons = [None] * len(exp.variant_ids)
        return exp


@dataclass(frozen=True)
class DeadLetter:
    """A record for the dead-letter topic. Its value never keeps a raw user context or
    user id (lola.stream.context.redact, applied here so that no call site can forget it)."""

    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", redact(self.value))


@dataclass(frozen=True)
class PriorRequest:
    partition: int
    experiment_id: str
    variant_id: str
    text: str
    #: Texts of the experiment's other variants when the prior was asked for (variants added
    #: later are not included), for providers that judge a variant against its siblings.
    siblings: tuple[str, ...] = ()


@dataclass
class BatchOutput:
    """What one processed batch produced (the worker turns it into Kafka records)."""

    decisions: list[tuple[bytes, bytes]] = field(default_factory=list)   # (key, value)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    prior_requests: list[PriorRequest] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)                 # accepted events by type
    duplicates: dict[str, int] = field(default_factory=dict)             # dropped duplicates by type
    dirty: set[str] = field(default_factory=set)                         # experiment ids changed
    evicted: list[str] = field(default_factory=list)                     # experiment ids evicted (tombstones)
    budget_evictions: int = 0                                            # dedup entries dropped early (budget)


class IdWindow:
    """A bounded FIFO map: the newest ``size`` keys are remembered (dedup, attribution).

    For incremental checkpoints (lola.stream.delta) it numbers the keys it ever appended
    (``seq``; the oldest kept key is number ``seq - len(order)``) and remembers the kept
    keys whose value was replaced (``touched``, a subset of the kept keys: bounded).
    """

    __slots__ = ("size", "map", "order", "seq", "touched")

    def __init__(self, size: int, items: list | None = None) -> None:
        self.size = size
        self.map: dict[str, Any] = {}
        self.order: deque[str] = deque()
        self.seq = 0
        self.touched: set[str] = set()
        for k, v in items or ():
            self.put(k, v)

    def clear_touched(self) -> None:
        self.touched.clear()

    def __contains__(self, key: str) -> bool:
        return key in self.map

    def get(self, key: str) -> Any:
        return self.map.get(key)

    def put(self, key: str, value: Any) -> None:
        if self.size <= 0:
            return
        if key not in self.map:
            self.order.append(key)
            self.seq += 1
            if len(self.order) > self.size:
                self._pop_front()
        else:
            self.touched.add(key)
        self.map[key] = value

    def _pop_front(self) -> None:
        key = self.order.popleft()
        del self.map[key]
        self.touched.discard(key)

    def truncate(self) -> None:
        """Keep the newest ``size`` keys (a reader configured smaller than the writer)."""
        while len(self.order) > max(self.size, 0):
            self._pop_front()

    def items(self) -> list:
        # The dict's insertion order is the deque's order (keys are only appended, and
        # evicted oldest-first), so keys and values serialise without a per-item loop.
        return [list(self.map), list(self.map.values())]

    def delta_since(self, from_seq: int) -> dict:
        """Keys appended since key number ``from_seq`` (still kept), where the kept keys begin
        now, and the replaced values; :meth:`apply_delta` is the inverse."""
        front = self.seq - len(self.order)
        tail = list(islice(reversed(self.order), self.seq - max(from_seq, front)))[::-1]
        m = self.map
        touched = [k for k in self.touched if k in m]
        return {"from": from_seq, "seq": self.seq, "front": front, "keys": tail, "values": [m[k] for k in tail],
                "tkeys": touched, "tvalues": [m[k] for k in touched]}

    def apply_delta(self, d: dict, convert: Any = None) -> None:
        """Apply :meth:`delta_since`'s record (``convert``: applied to each value read)."""
        if d["from"] != self.seq:
            raise LolaError(f"id window delta starts at key {d['from']}, the window is at {self.seq}")
        n_drop = min(len(self.order), max(0, d["front"] - (self.seq - len(self.order))))
        for _ in range(n_drop):
            self._pop_front()
        conv = convert or (lambda v: v)
        for key, value in zip(d["keys"], d["values"]):
            if key in self.map:
                raise LolaError("id window delta appends a key the window holds")
            self.order.append(key)
            self.map[key] = conv(value)
        for key, value in zip(d["tkeys"], d["tvalues"]):
            if key in self.map:
                self.map[key] = conv(value)
        self.seq = d["seq"]

    @classmethod
    def from_items(cls, size: int, items: list, seq: int | None = None, truncate: bool = True) -> "IdWindow":
        keys, values = items
        w = cls(size)
        w.map = dict(zip(keys, values))
        w.order = deque(keys)
        w.seq = len(keys) if seq is None else int(seq)
        if truncate:  # a chain restore (base + deltas) truncates once, after its last delta
            w.truncate()
        return w
