"""``EdgeAllocator``: decide in process from the snapshots topic, log each decision for the worker.

The worker publishes, in every policy snapshot, an ``edge`` block: an allocation made for
the interval until the next snapshot and a validity horizon (:mod:`lola.stream.edge`,
docs/serving.md). An ``EdgeAllocator`` follows the snapshots topic on a background
thread and answers :meth:`EdgeAllocator.decide` from memory, a few microseconds per call:

>>> edge = EdgeAllocator(bootstrap="kafka:9092", seed=7)          # doctest: +SKIP
>>> d = edge.decide("exp-1")          # Decision(variant_id, propensity, policy_version, request_id, ...)
>>> edge.impression(d)                # once the variant is displayed: the worker learns from it
>>> edge.click(d)                     # and from its clicks

What is logged, so that the worker learns and off-policy evaluation works:

* every decision, as a ``decision`` record on the decisions topic (the worker's own
  format, ``policy`` = ``"<policy>@edge"``, or ``"fallback@edge"`` past the horizon),
  with the propensity it was drawn with, keyed by experiment;
* the display, as an ``impression`` event (``event_id`` = ``request_id`` = the
  decision's id) on the events topic when the ad server confirms it
  (:meth:`impression`; ``log_impressions=True`` sends it at decision time); clicks
  name that impression. The worker counts impressions and clicks, never decisions.

Past a snapshot's ``valid_until`` (worker down) the snapshot's ``fallback`` split is served
and counted (:attr:`EdgeAllocator.fallbacks`). Only servable variants (state ``active``)
are ever returned.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from bisect import bisect_right
from typing import Any, Callable, NamedTuple

from lola.client.events import click as click_event
from lola.client.events import conversion as conversion_event
from lola.client.events import impression as impression_event
from lola.client.producer import EventProducer
from lola.errors import BrokerError, LolaError
from lola.stream import events as ev
from lola.stream import kafka as kf
from lola.stream.edge import servable
from lola.stream.settings import StreamSettings
from lola.stream.snapshot import SnapshotFollower

log = logging.getLogger("lola.client")


#: Seconds between attempts to open the snapshots topic while it does not exist yet.
TOPIC_RETRY_S = 2.0


class NotServable(LolaError, LookupError):
    """No snapshot for the experiment, or no servable variant in it."""


class Decision(NamedTuple):
    variant_id: str
    propensity: float
    policy_version: int
    request_id: str
    experiment_id: str
    fallback: bool  # served from the snapshot's safe split (past its validity horizon)


class _Split(NamedTuple):
    ids: tuple[str, ...]
    probs: tuple[float, ...]
    cum: tuple[float, ...]


class Plan(NamedTuple):
    """What one snapshot lets the edge serve."""

    allocation: _Split
    fallback: _Split
    valid_until: float
    policy: str
    policy_version: int


def _split(shares: dict[str, float], arms: dict[str, Any]) -> _Split | None:
    ids, probs = [], []
    for vid, p in shares.items():
        if p > 0 and vid in arms and servable(arms[vid]):
            ids.append(vid)
            probs.append(float(p))
    total = sum(probs)
    if not ids or total <= 0:
        return None
    probs = [p / total for p in probs]
    cum, acc = [], 0.0
    for p in probs:
        acc += p
        cum.append(acc)
    return _Split(tuple(ids), tuple(probs), tuple(cum))


def plan_of(snapshot: dict[str, Any], default_valid_s: float = 30.0) -> Plan | None:
    """The serving plan of one snapshot (None: nothing servable). A snapshot without an
    ``edge`` block (an older worker) serves its ``serving_share`` for ``default_valid_s``."""
    arms = snapshot.get("arms") or {}
    edge = snapshot.get("edge")
    if edge is None:
        shares = {vid: float(a.get("serving_share", 0.0)) for vid, a in arms.items()}
        edge = {"allocation": shares, "fallback": {vid: 1.0 for vid in arms},
                "valid_until": float(snapshot.get("ts", 0.0)) + default_valid_s}
    fallback = _split(edge.get("fallback") or {}, arms)
    allocation = _split(edge.get("allocation") or {}, arms) or fallback
    if allocation is None or fallback is None:
        return None
    return Plan(allocation, fallback, float(edge["valid_until"]), str(snapshot.get("policy", "")),
                int(snapshot.get("policy_version", 0)))


class EdgeTable:
    """The in-memory part: plans per experiment and :meth:`decide` (no Kafka; tests use it alone).

    ``rng``: a :class:`random.Random` (or an int seed) for the draws and the request ids;
    ``clock``: seconds since the epoch (``time.time``), compared with ``valid_until``;
    ``on_decision(decision, ts, plan)``: called for every decision (the Kafka log).
    """

    def __init__(self, rng: random.Random | int | None = None, clock: Callable[[], float] = time.time,
                 on_decision: Callable[[Decision, float, Plan], None] | None = None) -> None:
        self.rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        self.clock = clock
        self.on_decision = on_decision
        self.plans: dict[str, Plan] = {}
        self.decisions = 0
        self.fallbacks = 0
        self.waiting_for_topic = False  # set by EdgeAllocator while the snapshots topic does not exist
        self._lock = threading.Lock()  # one rng, shared by request threads

    def apply(self, snapshots: dict[str, dict[str, Any]]) -> None:
        """Replace the plans with those of ``snapshots`` (``{experiment_id: snapshot}``)."""
        plans = {}
        for exp_id, snap in snapshots.items():
            plan = plan_of(snap)
            if plan is not None:
                plans[exp_id] = plan
        self.plans = plans  # one reference swap: readers see the old or the new dict, whole

    def update(self, experiment_id: str, snapshot: dict[str, Any] | None) -> None:
        plans = dict(self.plans)
        plan = plan_of(snapshot) if snapshot is not None else None
        if plan is None:
            plans.pop(experiment_id, None)
        else:
            plans[experiment_id] = plan
        self.plans = plans

    def decide(self, experiment_id: str, context: dict[str, Any] | None = None) -> Decision:
        """One decision from the latest snapshot (``context`` is accepted for contextual
        policies and not used by the allocations published today). Raises :class:`NotServable`."""
        plan = self.plans.get(experiment_id)
        if plan is None:
            raise NotServable(f"no servable snapshot for experiment {experiment_id!r}")
        now = self.clock()
        late = now > plan.valid_until
        split = plan.fallback if late else plan.allocation
        with self._lock:
            u = self.rng.random()
            rid = "%032x" % self.rng.getrandbits(128)
            self.decisions += 1
            self.fallbacks += late
        i = min(bisect_right(split.cum, u), len(split.ids) - 1)
        d = Decision(split.ids[i], split.probs[i], plan.policy_version, rid, experiment_id, late)
        if self.on_decision is not None:
            self.on_decision(d, now, plan)
        return d


class EdgeAllocator(EdgeTable):
    """:class:`EdgeTable` fed by the snapshots topic, logging to Kafka (module docstring).

    Connection settings as for :class:`~lola.client.EventProducer`. ``poll_s``: how long
    the follower thread waits for new snapshots per round. :meth:`wait_ready` blocks
    until the topic has been read to its end once.
    """

    def __init__(self, bootstrap: str | None = None, settings: StreamSettings | None = None,
                 seed: random.Random | int | None = None, log_impressions: bool = False, poll_s: float = 0.2,
                 clock: Callable[[], float] = time.time, **overrides: Any) -> None:
        from confluent_kafka import Producer

        super().__init__(seed, clock, self._log_decision)
        self.settings = settings or StreamSettings.load(bootstrap_servers=bootstrap, **overrides)
        self.settings.require_bootstrap()
        self.log_impressions = log_impressions
        self.events = EventProducer(settings=self.settings)
        self._producer = Producer(kf.producer_config(self.settings))
        self.logged = self.log_failed = 0
        self.poll_s = poll_s
        self._ready = threading.Event()
        self._stop = threading.Event()
        # created by the follower thread: the snapshots topic may not exist yet (a server started
        # before the worker), and waiting for it there keeps /healthz alive and /readyz at 503
        self._follower: SnapshotFollower | None = None
        self._seen: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._follow, name="lola-edge-snapshots", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ snapshots
    def _open_follower(self) -> bool:
        """Open the snapshot follower; False (logged once) while the topic does not exist yet."""
        try:
            self._follower = SnapshotFollower(self.settings, group="lola-edge")
        except BrokerError as exc:
            if not self.waiting_for_topic:
                log.warning("%s; waiting for it (retry every %.0f s)", exc, TOPIC_RETRY_S)
            self.waiting_for_topic = True
            return False
        self.waiting_for_topic = False
        return True

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                if self._follower is None and not self._open_follower():
                    self._stop.wait(TOPIC_RETRY_S)
                    continue
                latest = self._follower.poll(self.poll_s)
                changed = {k: v for k, v in latest.items() if self._seen.get(k) is not v}
                gone = [k for k in self._seen if k not in latest]
                if changed or gone:
                    plans = dict(self.plans)
                    for k in gone:
                        plans.pop(k, None)
                    for k, snap in changed.items():
                        plan = plan_of(snap)
                        if plan is None:
                            plans.pop(k, None)
                        else:
                            plans[k] = plan
                    self.plans = plans
                    self._seen = dict(latest)
                self._ready.set()
                self._stop.wait(0.01 if changed else self.poll_s)
            except Exception:  # noqa: BLE001 - the follower thread must outlive a bad round; logged
                log.exception("edge snapshot follower round failed")
                self._stop.wait(1.0)

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        return self._ready.wait(timeout_s)

    # ------------------------------------------------------------------ logging
    def _delivered(self, err: Any, msg: Any) -> None:
        if err is None:
            self.logged += 1
        else:
            self.log_failed += 1

    def _log_decision(self, d: Decision, ts: float, plan: Plan) -> None:
        policy = "fallback@edge" if d.fallback else f"{plan.policy}@edge"
        value = ev.encode_decision(d.request_id, d.experiment_id, d.variant_id, d.propensity, policy,
                                   d.policy_version, ts)
        kf.produce(self._producer, self.settings.decisions_topic, value, key=d.experiment_id.encode(),
                   on_delivery=self._delivered)
        self._producer.poll(0)
        if self.log_impressions:
            self.impression(d, ts)

    def impression(self, d: Decision, ts: float | None = None) -> None:
        """The ad server displayed ``d``: the impression the worker counts (event_id = request_id)."""
        self.events.send(impression_event(d.experiment_id, d.variant_id, event_id=d.request_id, ts=ts,
                                          request_id=d.request_id))

    def click(self, d: Decision, ts: float | None = None, event_id: str | None = None) -> None:
        """A click on ``d``'s impression."""
        self.events.send(click_event(d.experiment_id, d.variant_id, event_id=event_id or f"{d.request_id}-c",
                                     ts=ts, impression_id=d.request_id, request_id=d.request_id))

    def conversion(self, d: Decision, value: float, ts: float | None = None, event_id: str | None = None) -> None:
        """A conversion worth ``value`` after ``d``."""
        self.events.send(conversion_event(d.experiment_id, d.variant_id, value, event_id=event_id or f"{d.request_id}-v",
                                          ts=ts))

    def ready(self) -> bool:
        """The snapshots topic has been read to its end once."""
        return self._ready.is_set()

    def flush(self, timeout_s: float = 30.0) -> int:
        return self._producer.flush(timeout_s) + self.events.flush(timeout_s)

    def close(self) -> None:
        if self._producer is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        if self._follower is not None:
            self._follower.close()
        left = self._producer.flush(30)
        self.events.close()
        # drop the Kafka clients now: an app or test that still holds this object must not keep
        # them reconnecting to a broker that is gone (librdkafka clients have no close())
        self._producer = self.events = None  # type: ignore[assignment]
        if left:
            raise BrokerError(f"{left} decision record(s) undelivered after 30 s")

    def __enter__(self) -> "EdgeAllocator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
