"""The records one partition-shard works with: its settings, the experiment registry
entry, the outputs of a batch, a prior request and the bounded id window.

Plain data, no kernels and no I/O; :mod:`lola.stream.processor` applies events to them.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any


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
    context_user_dim: int = _setting_default("context_user_dim")
    context_arm_dim: int = _setting_default("context_arm_dim")
    join_window_s: float = _setting_default("join_window_s")
    join_window_bytes: int = _setting_default("join_window_bytes")

    @classmethod
    def from_settings(cls, settings: Any) -> "ProcessorConfig":
        return cls(dedup_window=settings.dedup_window,
                   request_memory=min(settings.dedup_window, 20_000),
                   attribution_window_s=settings.attribution_window_s,
                   max_message_bytes=settings.max_message_bytes,
                   default_policy=settings.default_policy,
                   default_alpha=settings.default_alpha,
                   default_n_aux=settings.default_n_aux,
                   seed=settings.seed,
                   feature_dim=settings.feature_dim,
                   max_future_skew_s=settings.max_future_skew_s,
                   context_user_dim=settings.context_user_dim,
                   context_arm_dim=settings.context_arm_dim,
                   join_window_s=settings.join_window_s,
                   join_window_bytes=settings.join_window_bytes)


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

    def to_json(self) -> dict[str, Any]:
        return {"id": self.experiment_id, "row": self.row, "policy": self.policy,
                "win": self.attribution_window_s, "variants": self.variant_ids, "texts": self.texts,
                "version": self.version, "max_ts": self.max_ts if math.isfinite(self.max_ts) else None}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Experiment":
        exp = cls(d["id"], d["row"], d["policy"], d["win"], list(d["variants"]), list(d["texts"]),
                  version=d["version"], max_ts=-math.inf if d["max_ts"] is None else d["max_ts"])
        exp.slots = {v: i for i, v in enumerate(exp.variant_ids)}
        return exp


@dataclass(frozen=True)
class DeadLetter:
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str


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
    duplicates: int = 0
    dirty: set[str] = field(default_factory=set)                         # experiment ids changed


class IdWindow:
    """A bounded FIFO map: the newest ``size`` keys are remembered (dedup, attribution)."""

    __slots__ = ("size", "map", "order")

    def __init__(self, size: int, items: list | None = None) -> None:
        self.size = size
        self.map: dict[str, Any] = {}
        self.order: deque[str] = deque()
        for k, v in items or ():
            self.put(k, v)

    def __contains__(self, key: str) -> bool:
        return key in self.map

    def get(self, key: str) -> Any:
        return self.map.get(key)

    def put(self, key: str, value: Any) -> None:
        if self.size <= 0:
            return
        if key not in self.map:
            self.order.append(key)
            if len(self.order) > self.size:
                del self.map[self.order.popleft()]
        self.map[key] = value

    def items(self) -> list:
        # The dict's insertion order is the deque's order (keys are only appended, and
        # evicted oldest-first), so keys and values serialise without a per-item loop.
        return [list(self.map), list(self.map.values())]

    @classmethod
    def from_items(cls, size: int, items: list) -> "IdWindow":
        keys, values = items
        w = cls(size)
        if len(keys) > size:
            keys, values = keys[len(keys) - size:], values[len(values) - size:]
        w.map = dict(zip(keys, values))
        w.order = deque(keys)
        return w
