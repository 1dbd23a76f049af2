"""The decision log: the worker's decisions joined with their outcomes (``lola evaluate``, ``lola report``).

 Each decision (``lola.decisions``: request_id, variant, propensity) is joined
by ``request_id`` with the impression that carried it and with clicks (a click naming that
``request_id``, or an ``impression_id`` of that impression) from ``lola.events``. A decision is
one logged round if its impression joined (the variant was shown); its reward is 1 if at least
one click joined, else 0. Decisions whose impression never joined, and impressions or clicks
naming a request no decision answered, are counted in ``health`` (logging health), never
evaluated. An experiment's actions are its variants in the order the variant events added them.

**Open Bandit Dataset** (``--log obd:DIR``, DIR holding ``all.csv`` and ``item_context.csv``):
one round per row, action ``item_id``, reward ``click``, propensity ``propensity_score``, time the
row number; the ``position`` column is ignored (every target policy here is position-independent).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from lola.data.obd import load_obd
from lola.errors import LolaError

#: Most records read from one topic (an explicit bound: the join is in memory).
MAX_RECORDS = 5_000_000


@dataclass
class Log:
    """Joined rounds: experiment, action index within it, reward, logging propensity, time."""

    experiment: list[str]
    action: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    ts: np.ndarray
    variants: dict[str, list[str]]
    health: dict[str, int] = field(default_factory=dict)

    def select(self, experiment_id: str | None) -> "Log":
        if experiment_id is None:
            return self
        keep = np.array([e == experiment_id for e in self.experiment], dtype=bool)
        if not keep.any():
            raise LolaError(f"no logged decision of experiment {experiment_id!r}")
        return Log([e for e in self.experiment if e == experiment_id], self.action[keep], self.reward[keep],
                   self.pscore[keep], self.ts[keep], {experiment_id: self.variants[experiment_id]}, self.health)


class NoJoinedDecision(LolaError):
    """The topics hold no decision that joined its impression (nothing to evaluate yet)."""


def join_stream(events: Iterable[dict[str, Any]], decisions: Iterable[dict[str, Any]]) -> Log:
    """Join decisions with impressions and clicks by request id (module docstring)."""
    variants: dict[str, list[str]] = {}
    shown: dict[str, str] = {}            # request_id -> variant shown
    imp_request: dict[str, str] = {}      # impression event_id -> request_id
    clicked: set[str] = set()
    click_imps: list[str] = []
    orphan_clicks = 0
    for e in events:
        kind = e.get("type")
        if kind == "variant" and e.get("action", "add") == "add":
            vs = variants.setdefault(e["experiment_id"], [])
            if e["variant_id"] not in vs:
                vs.append(e["variant_id"])
        elif kind == "impression" and e.get("request_id"):
            shown[e["request_id"]] = e["variant_id"]
            imp_request[e["event_id"]] = e["request_id"]
        elif kind == "click":
            if e.get("request_id"):
                clicked.add(e["request_id"])
            elif e.get("impression_id"):
                click_imps.append(e["impression_id"])
            else:
                orphan_clicks += 1
    for imp in click_imps:
        req = imp_request.get(imp)
        if req is None:
            orphan_clicks += 1
        else:
            clicked.add(req)
    rows: list[tuple[str, int, float, float, float]] = []
    decided: set[str] = set()
    no_impression = 0
    for d in decisions:
        req = d["request_id"]
        if req in decided:
            continue  # a retried request answered again: one round
        decided.add(req)
        exp = d["experiment_id"]
        if req not in shown:
            no_impression += 1
            continue
        vs = variants.get(exp, [])
        if d["variant_id"] not in vs:
            no_impression += 1
            continue
        rows.append((exp, vs.index(d["variant_id"]), 1.0 if req in clicked else 0.0, float(d["propensity"]),
                     float(d.get("ts", 0.0))))
    health = {"decisions": len(decided), "joined": len(rows), "no_impression": no_impression,
              "impressions_without_decision": len(set(shown) - decided),
              "clicks_without_decision": orphan_clicks + len(clicked - decided)}
    if not rows:
        raise NoJoinedDecision(f"no decision joined an impression ({health})")
    return Log([r[0] for r in rows], np.array([r[1] for r in rows], dtype=np.int64),
               np.array([r[2] for r in rows]), np.array([r[3] for r in rows]), np.array([r[4] for r in rows]),
               variants, health)


def read_topic(settings: Any, topic: str, max_records: int = MAX_RECORDS, timeout_s: float = 60.0) -> list[dict]:
    """Every readable JSON record of a whole topic (all partitions, from the start)."""
    from confluent_kafka import Consumer

    from lola.errors import BrokerError
    from lola.stream import kafka as kf

    conf = kf.consumer_config(settings, "lola-evaluate")
    probe = Consumer(conf)
    try:
        meta = probe.list_topics(topic, timeout=timeout_s).topics.get(topic)
    finally:
        probe.close()
    if meta is None or meta.error is not None:
        raise BrokerError(f"topic {topic} does not exist")
    out: list[dict] = []
    for p in sorted(meta.partitions):
        for msg in kf.read_partition_to_end(conf, topic, p, 0, timeout_s):
            if len(out) >= max_records:
                raise LolaError(f"{topic} has more than {max_records} records (raise --max-records)")
            try:
                value = orjson.loads(msg.value() or b"null")
            except orjson.JSONDecodeError:
                continue
            if isinstance(value, dict):
                out.append(value)
    return out


def read_stream_log(settings: Any, max_records: int) -> Log:
    """The worker's own log: its events and decisions topics read and joined by request id."""
    events = read_topic(settings, settings.events_topic, max_records)
    decisions = read_topic(settings, settings.decisions_topic, max_records)
    return join_stream(events, decisions)


def read_obd(folder: str | Path) -> Log:
    """One OBD campaign folder (``all.csv``, ``item_context.csv``) as a log of one experiment
    ``obd``; the rows are read by the one OBD reader (:func:`lola.data.obd.load_obd`)."""
    rows, n_items = load_obd(Path(folder))
    if not rows:
        raise LolaError(f"{Path(folder) / 'all.csv'}: no logged decisions")
    action = np.array([r.item_id for r in rows], dtype=np.int64)
    reward = np.array([float(r.click) for r in rows])
    pscore = np.array([r.propensity for r in rows])
    ts = np.arange(len(rows), dtype=float)
    return Log(["obd"] * len(rows), action, reward, pscore, ts, {"obd": [str(i) for i in range(n_items)]},
               {"decisions": len(rows), "joined": len(rows)})
