"""Incremental checkpoints (lola.stream.delta): base + deltas restore what a full checkpoint restores."""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest

from lola.errors import LolaError
from lola.kernels.compaction import SERIALISED
from lola.stream.chain import Chain, delta_key, restore, select_chain
from lola.stream.delta import ChainTracker, delta_meta
from lola.stream.processor import ShardProcessor
from lola.stream.shard_checkpoint import _split_checkpoint, checkpoint_meta
from lola.stream.shard import ProcessorConfig

HEAD = {"epoch": 1, "owner": "t", "topic": "events"}


def canon(proc: ShardProcessor) -> tuple:
    """Everything a checkpoint holds, comparable (the creation time left out)."""
    meta, _ = _split_checkpoint(proc.to_checkpoint("events"))
    meta.pop("created")
    st = proc.state
    n = st.n_experiments
    arrays = {name: getattr(st, name)[:n].tobytes() for name in SERIALISED}
    tail = {name: bool(np.any(getattr(st, name)[n:])) for name in SERIALISED}  # rows beyond n are clear
    return (orjson.dumps(meta, option=orjson.OPT_SORT_KEYS), arrays, [st.params(r) for r in range(n)],
            (st.capacity_experiments, st.capacity_arms, st.feature_dim), tail,
            sorted((r, e.experiment_id, e.row) for r, e in proc.by_row.items()), sorted(proc.expiring))


def full_restore(proc: ShardProcessor, config: ProcessorConfig) -> ShardProcessor:
    return ShardProcessor.from_checkpoint(proc.to_checkpoint("events"), config)


class Workload:
    """Seeded random events over many experiments: adds, counts, clicks on impressions,
    re-sent ids, request ids, archives (evictions move rows), retirements, pauses, priors."""

    def __init__(self, seed: int, experiments: int = 12) -> None:
        self.rng = random.Random(seed)
        self.offset = 0
        self.ts = 1_000.0
        self.n_exp = experiments
        self.imps: list[tuple[str, str, str]] = []
        self.requests: list[str] = []
        self.created = 0
        self.archived: set[str] = set()

    def _rec(self, **event) -> tuple[int, bytes, bytes]:
        r = (self.offset, event["experiment_id"].encode(), orjson.dumps(event))
        self.offset += 1
        return r

    def batch(self, n: int) -> tuple[list, list[float]]:
        rng, out = self.rng, []
        for _ in range(n):
            self.ts += rng.choice((0.05, 0.1, 0.5, 3.0))
            e = f"e{rng.randrange(self.n_exp)}"
            k = rng.random()
            if k < 0.1:
                out.append(self._rec(type="variant", experiment_id=e, variant_id=f"v{rng.randrange(4)}",
                                     text=f"headline {rng.randrange(99)}"))
            elif k < 0.45:
                eid = f"i{self.offset}"
                rid = rng.choice(self.requests) if self.requests and rng.random() < 0.3 else f"r{self.offset}"
                v = f"v{rng.randrange(3)}"
                out.append(self._rec(type="impression", experiment_id=e, variant_id=v, event_id=eid, ts=self.ts,
                                     request_id=rid))
                self.imps.append((e, v, eid))
            elif k < 0.6 and self.imps:
                e2, v, iid = rng.choice(self.imps[-40:])
                out.append(self._rec(type="click", experiment_id=e2, variant_id=v, event_id=f"c{self.offset}",
                                     impression_id=iid, ts=self.ts))
            elif k < 0.65 and self.imps:  # an exact re-send
                e2, v, iid = rng.choice(self.imps[-40:])
                out.append(self._rec(type="impression", experiment_id=e2, variant_id=v, event_id=iid, ts=self.ts))
            elif k < 0.72:
                out.append(self._rec(type="conversion", experiment_id=e, variant_id=f"v{rng.randrange(3)}",
                                     event_id=f"k{self.offset}", ts=self.ts, value=rng.random()))
            elif k < 0.85:
                rid = rng.choice(self.requests) if self.requests and rng.random() < 0.2 else f"q{self.offset}"
                self.requests.append(rid)
                out.append(self._rec(type="decision_request", experiment_id=e, request_id=rid))
            elif k < 0.88:
                out.append(self._rec(type="experiment", experiment_id=e,
                                     action=rng.choice(("pause", "resume", "stop", "update")),
                                     **({"settings": {"attribution_window_s": 30}} if rng.random() < 0.3 else {})))
            elif k < 0.9:
                out.append(self._rec(type="experiment", experiment_id=e, action="archive"))
            elif k < 0.93:
                out.append(self._rec(type="variant", experiment_id=e, variant_id=f"v{rng.randrange(5)}",
                                     text="x", action="retire"))
            else:
                self.ts += 20.0  # log time passes: evictions and frees
                out.append(self._rec(type="impression", experiment_id=e, variant_id="v0", event_id=f"t{self.offset}",
                                     ts=self.ts))
        return out, [self.ts] * len(out)


def small_config() -> ProcessorConfig:
    # a small de-duplication budget and id windows: the fronts drop inside every round
    return ProcessorConfig(dedup_budget_bytes=6_000, dedup_window_s=40.0, dedup_window=60, request_memory=30,
                           attribution_window_s=25.0)


def step(proc: ShardProcessor, wl: Workload, n: int, rng: random.Random) -> None:
    recs, ts = wl.batch(n)
    out = proc.process(recs, now=wl.ts, timestamps=ts)
    for pr in out.prior_requests:
        if rng.random() < 0.7:
            proc.apply_prior(pr.experiment_id, pr.variant_id, rng.random() * 0.2)
    if proc.experiments and rng.random() < 0.2:
        e = rng.choice(sorted(proc.experiments))
        exp = proc.experiments[e]
        if exp.variant_ids:
            proc.set_variant_state(e, rng.choice(exp.variant_ids), rng.choice(("active", "blocked", "pending")))


@pytest.mark.parametrize("seed", range(6))
def test_base_plus_deltas_equals_a_full_checkpoint_at_every_chain_end(seed):
    cfg = small_config()
    rng = random.Random(100 + seed)
    wl = Workload(seed)
    proc = ShardProcessor(0, cfg)
    step(proc, wl, 30, rng)
    base = proc.mark("events", HEAD)
    tracker = ChainTracker(proc)
    deltas: list[bytes] = []
    saw = {"evicted": 0, "front": 0, "new": 0, "archived": 0, "hot": 0}
    for j in range(1, 25):
        step(proc, wl, rng.randrange(1, 60), rng)
        blob = proc.mark_delta(tracker, {**HEAD, "j": j})
        assert blob is not None, f"round {j}: the workload keeps 4 arms and 64 rows, a delta expresses it"
        tracker = ChainTracker(proc)
        meta = delta_meta(blob)
        saw["evicted"] += len(meta["evicted"])
        saw["front"] += meta["dedup"]["front"] > meta["dedup"]["from"] - 200  # fronts move
        saw["new"] += sum(1 for d in meta["experiments"] if d is not None and d["version"] <= 1)
        saw["archived"] += sum(1 for d in meta["experiments"] if d is not None and d["status"] == "archived")
        saw["hot"] += sum(1 for d in meta["hot"] if d is not None)
        deltas.append(blob)
        chained = ShardProcessor.from_chain(base, deltas, cfg)
        assert canon(chained) == canon(full_restore(proc, cfg)), f"chain end {j}"
        assert chained.next_offset == proc.next_offset
    assert (saw["evicted"] or saw["archived"]) and saw["hot"], saw  # the workload exercised both entry kinds
    assert proc.seen.front > 0
    # no batch needed fault isolation: a processing bug would hide behind its per-record replay
    assert proc.rollbacks == 0  # and the window's front dropped


def test_evictions_move_rows_and_the_delta_addresses_rows_by_experiment_id():
    cfg = ProcessorConfig(attribution_window_s=10.0)
    wl = Workload(1)
    proc = ShardProcessor(0, cfg)
    recs = [wl._rec(type="variant", experiment_id=f"e{i}", variant_id=v, text=f"t{v}") for i in range(6) for v in "ab"]
    recs += [wl._rec(type="impression", experiment_id=f"e{i}", variant_id="a", event_id=f"i{i}", ts=100.0)
             for i in range(6)]
    proc.process(recs, now=100.0, timestamps=[100.0] * len(recs))
    base = proc.mark("events", HEAD)
    tracker = ChainTracker(proc)
    row_of_last = proc.experiments["e5"].row
    recs = [wl._rec(type="experiment", experiment_id="e1", action="archive"),
            wl._rec(type="impression", experiment_id="e0", variant_id="b", event_id="late", ts=200.0)]
    proc.process(recs, now=200.0, timestamps=[150.0, 200.0])
    assert "e1" not in proc.experiments and proc.experiments["e5"].row != row_of_last  # moved into the freed row
    blob = proc.mark_delta(tracker, {**HEAD, "j": 1})
    meta = delta_meta(blob)
    assert meta["evicted"] == ["e1"]
    assert set(meta["ids"]) == {"e0", "e5"}  # changed + moved; the others not sent
    assert meta["experiments"] == [None, None] and meta["params"][meta["ids"].index("e0")] is None  # hot only
    assert meta["params"][meta["ids"].index("e5")] is not None  # moved: its parameters travel
    assert canon(ShardProcessor.from_chain(base, [blob], cfg)) == canon(full_restore(proc, cfg))


def test_a_delta_is_refused_where_it_does_not_follow():
    cfg = small_config()
    rng = random.Random(3)
    wl = Workload(3)
    proc = ShardProcessor(0, cfg)
    step(proc, wl, 40, rng)
    base = proc.mark("events", HEAD)
    t = ChainTracker(proc)
    step(proc, wl, 20, rng)
    d1 = proc.mark_delta(t, {**HEAD, "j": 1})
    t = ChainTracker(proc)
    step(proc, wl, 20, rng)
    d2 = proc.mark_delta(t, {**HEAD, "j": 2})
    with pytest.raises(LolaError, match="does not follow"):
        ShardProcessor.from_chain(base, [d2], cfg)  # d1 missing: a gap
    with pytest.raises(LolaError):
        ShardProcessor.from_chain(base, [d1, d1], cfg)
    with pytest.raises(LolaError, match="bad magic"):
        delta_meta(base)


def test_a_rollback_or_a_capacity_change_makes_the_next_record_a_base():
    cfg = small_config()
    rng = random.Random(4)
    wl = Workload(4)
    proc = ShardProcessor(0, cfg)
    step(proc, wl, 20, rng)
    proc.mark("events", HEAD)
    t = ChainTracker(proc)
    proc.rollbacks += 1  # as after fault isolation (its touched sets were rebuilt)
    assert proc.mark_delta(t, {**HEAD, "j": 1}) is None
    t = ChainTracker(proc)
    proc.mark()  # the journal's own restore point (not written): the chain cannot follow it
    assert proc.mark_delta(t, {**HEAD, "j": 1}) is None
    t = ChainTracker(proc)
    recs = [wl._rec(type="variant", experiment_id=f"grow{i}", variant_id="a", text="t") for i in range(80)]
    proc.process(recs, now=wl.ts, timestamps=[wl.ts] * len(recs))  # 64 rows -> 128: arrays regrown
    assert proc.mark_delta(t, {**HEAD, "j": 1}) is None



def test_a_chain_whose_shard_lost_half_its_experiments_starts_a_new_base(monkeypatch):
    """After an archive wave the worker would otherwise hold (and a restart read) a base of
    evicted experiments until the deltas outgrow half of it."""
    from lola.stream import checkpoints

    monkeypatch.setattr(checkpoints, "SHRUNK_BASE_MIN_BYTES", 0)  # a real base must be >= 1 MiB
    proc = ShardProcessor(0, small_config())

    def rec(o, **event):
        return (o, event["experiment_id"].encode(), orjson.dumps(event))

    proc.process([rec(i, type="variant", experiment_id=f"x{i}", variant_id="a", text="t",
                      settings={"attribution_window_s": 1}) for i in range(10)], now=100.0, timestamps=[100.0] * 10)
    chain = checkpoints.ShardChain(0)
    key, _ = chain.next_record(proc, b"g:events:0", "events", "t", deltas=True, max_chain=100)
    assert key == b"g:events:0" and chain.epoch == 1 and chain.base_experiments == 10

    def archive(ids, o, t):
        recs = [rec(o + k, type="experiment", experiment_id=f"x{i}", action="archive") for k, i in enumerate(ids)]
        recs.append(rec(o + len(ids), type="variant", experiment_id="tick", variant_id="a", text="t"))
        proc.process(recs, now=t + 50, timestamps=[t] * len(ids) + [t + 50])  # the tick moves the clock
        return o + len(recs)

    o = archive(range(4), 10, 150.0)       # 10 -> 7 experiments (the tick adds one): a delta
    key, _ = chain.next_record(proc, b"g:events:0", "events", "t", deltas=True, max_chain=100)
    assert len(proc.experiments) == 7 and key != b"g:events:0" and chain.epoch == 1
    archive(range(4, 8), o, 300.0)         # 7 -> 3 of the base's 10: a new base
    key, _ = chain.next_record(proc, b"g:events:0", "events", "t", deltas=True, max_chain=100)
    assert len(proc.experiments) == 3 and key == b"g:events:0" and chain.epoch == 2 and chain.base_experiments == 3


def test_a_version_1_checkpoint_with_its_legacy_window_chains_and_drops_it():
    from pathlib import Path

    blob = (Path(__file__).parent / "data" / "main_checkpoint_v1.bin").read_bytes()
    cfg = ProcessorConfig()
    proc = ShardProcessor.from_checkpoint(blob, cfg)
    assert proc.legacy_seen is not None
    base = proc.mark("events", HEAD)
    t = ChainTracker(proc)
    exp = next(iter(proc.experiments.values()))
    recs = [(proc.next_offset + i, exp.experiment_id.encode(), orjson.dumps(
        {"type": "impression", "experiment_id": exp.experiment_id, "variant_id": exp.variant_ids[0],
         "event_id": f"n{i}", "ts": 4e9 + i * 1e6})) for i in range(3)]  # far later: the legacy ids expire
    proc.process(recs, now=4e9 + 3e6, timestamps=[4e9 + i * 1e6 for i in range(3)])
    assert proc.legacy_seen is None
    d = proc.mark_delta(t, {**HEAD, "j": 1})
    assert canon(ShardProcessor.from_chain(base, [d], cfg)) == canon(full_restore(proc, cfg))


# ---------------------------------------------------------------------- the restore chain walk (crash table)
KEY = b"g:events:0"


class History:
    """One shard's records as the checkpointer writes them, with the full state at each."""

    def __init__(self, seed: int = 7) -> None:
        self.cfg = small_config()
        self.rng = random.Random(seed)
        self.wl = Workload(seed)
        self.proc = ShardProcessor(0, self.cfg)
        self.tracker: ChainTracker | None = None
        self.truth: dict[int, tuple] = {}  # next_offset -> canon of a full restore there
        self.j = 0

    def base(self, epoch: int, owner: str = "A") -> tuple[bytes, bytes]:
        step(self.proc, self.wl, 25, self.rng)
        blob = self.proc.mark("events", {"epoch": epoch, "owner": owner})
        self.tracker, self.j = ChainTracker(self.proc), 0
        self.truth[self.proc.next_offset] = canon(full_restore(self.proc, self.cfg))
        return KEY, blob

    def delta(self, epoch: int, owner: str = "A") -> tuple[bytes, bytes]:
        step(self.proc, self.wl, 25, self.rng)
        self.j += 1
        blob = self.proc.mark_delta(self.tracker, {"epoch": epoch, "owner": owner, "j": self.j, "topic": "events"})
        assert blob is not None
        self.tracker = ChainTracker(self.proc)
        self.truth[self.proc.next_offset] = canon(full_restore(self.proc, self.cfg))
        return delta_key(KEY, self.j), blob


def restored(records, h: History) -> tuple[Chain, ShardProcessor]:
    chain = select_chain(records, KEY)
    proc = restore(chain, h.cfg)
    assert proc.next_offset == chain.next_offset
    assert canon(proc) == h.truth[chain.next_offset]  # exactly the state a full checkpoint there restores
    return chain, proc


def test_chain_walk_takes_the_base_and_its_deltas_while_they_follow():
    h = History()
    b1, d1, d2, d3 = h.base(1), h.delta(1), h.delta(1), h.delta(1)
    foreign = (b"other:events:0", b1[1])
    chain, _ = restored([b1, foreign, d1, d2, d3], h)
    assert len(chain.deltas) == 3 and chain.max_epoch == 1
    # crash after producing D(1,3), before its ack: it may be missing; either end is exact
    chain, _ = restored([b1, d1, d2], h)
    assert len(chain.deltas) == 2
    # a missing delta (a gap): stop before it, replay from D(1,1)'s end
    chain, _ = restored([b1, d1, d3], h)
    assert len(chain.deltas) == 1
    # the first delta missing: the base alone
    chain, _ = restored([b1, d2, d3], h)
    assert chain.deltas == []


def test_a_new_base_supersedes_and_old_epoch_deltas_are_ignored():
    h = History()
    b1, d11, d12, d13 = h.base(1), h.delta(1), h.delta(1), h.delta(1)
    # crash while writing B(2): B(1) and its deltas (not overwritten before B(2) is acked)
    chain, _ = restored([b1, d11, d12, d13], h)
    assert (chain.epoch, len(chain.deltas)) == (1, 3)
    b2 = h.base(2)
    # B(2) acked, no delta of epoch 2 yet: leftover epoch-1 deltas in slots 1..3 are ignored
    chain, _ = restored([b1, d11, d12, d13, b2], h)
    assert (chain.epoch, chain.deltas) == (2, [])
    d21 = h.delta(2)
    # compaction keeps the newest record per key: slot 1 now holds D(2,1), slots 2, 3 old ones
    chain, _ = restored([d12, d13, b2, d21], h)
    assert (chain.epoch, len(chain.deltas), chain.max_epoch) == (2, 1, 2)
    # an unreadable record is skipped, not fatal
    chain, _ = restored([(KEY, b"garbage"), (delta_key(KEY, 2), b"LOLADLT1\x00"), b2, d21], h)
    assert len(chain.deltas) == 1


def test_two_owners_chains_never_interleave():
    h = History()
    b1 = h.base(3, owner="A")
    d1 = h.delta(3, owner="A")
    zombie = History(seed=99)
    zb = zombie.base(3, owner="Z")  # another owner, the same epoch, less input
    zd1 = zombie.delta(3, owner="Z")
    records = [b1, zb, d1, zd1] if zombie.proc.next_offset < h.proc.next_offset else [zb, b1, zd1, d1]
    chain = select_chain(records, KEY)
    winner = h if chain.base == b1[1] else zombie
    assert chain.deltas == [(d1 if winner is h else zd1)[1]]  # only the base's own owner's deltas
    assert canon(restore(chain, winner.cfg)) == winner.truth[chain.next_offset]


def test_a_corrupt_delta_restores_from_the_chain_before_it():
    h = History()
    b1, d1, d2 = h.base(1), h.delta(1), h.delta(1)
    meta = delta_meta(d2[1])
    bad = d2[1][:len(d2[1]) - 40] + b"\x00" * 40  # header intact, arrays corrupt
    assert delta_meta(bad) == meta
    chain = select_chain([b1, d1, (d2[0], bad)], KEY)
    assert len(chain.deltas) == 2
    proc = restore(chain, h.cfg)
    assert canon(proc) == h.truth[delta_meta(d1[1])["to_offset"]]


def test_a_checkpoint_written_by_main_is_a_base_of_epoch_0():
    from pathlib import Path

    blob = (Path(__file__).parent / "data" / "main_checkpoint_v1.bin").read_bytes()
    chain = select_chain([(KEY, blob)], KEY)
    assert (chain.epoch, chain.max_epoch, chain.deltas) == (0, 0, [])
    assert restore(chain).next_offset == ShardProcessor.checkpoint_offset(blob)


def test_fault_isolation_rolls_back_to_base_plus_deltas_with_exact_counts(kernel_bug_on):
    """A kernel bug after a base and two deltas: the rollback restores the chain, then the journal."""
    from lola.stream.loadgen import open_stream
    from lola.stream.snapshot import counts_view

    stream = open_stream(1200, 3, 3, seed=5, duplicate_rate=0.05, malformed_rate=0.0)
    recs = [(i, k, v) for i, (k, v) in enumerate(stream.records)]
    victim = next(i for i, (_, _, v) in enumerate(recs) if i > 900 and b'"click"' in v)
    kernel_bug_on(recs[victim][2])
    proc = ShardProcessor(0)
    proc.process(recs[:300], now=2e9)
    proc.mark("events", HEAD)
    tracker = ChainTracker(proc)
    for j, (a, b) in enumerate(((300, 600), (600, 850)), start=1):
        proc.process(recs[a:b], now=2e9)
        assert proc.mark_delta(tracker, {**HEAD, "j": j}) is not None
        tracker = ChainTracker(proc)
    out = proc.process(recs[850:], now=2e9)
    assert [(d.offset, d.reason) for d in out.dead_letters] == [(victim, "processing_error")]
    assert proc.rollbacks >= 1 and len(proc._restore_deltas) == 0  # isolation took a full restore point
    truth = stream.truth
    event = orjson.loads(recs[victim][2])
    truth[event["experiment_id"]][event["variant_id"]]["clicks"] -= 1
    assert counts_view({e: proc.snapshot(e) for e in proc.experiments}) == truth
    assert proc.mark_delta(tracker, {**HEAD, "j": 3}) is None  # after a rollback the chain needs a base


def test_a_version_2_checkpoint_without_chain_fields_restores_the_same_state():
    """Main's version-2 record is this build's base less epoch, owner and the id windows' sequence
    numbers (its keyed de-dup window: tests/stream/test_upgrade.py)."""
    import struct

    h = History()
    _, blob = h.base(4)
    meta, state = _split_checkpoint(blob)
    for field in ("epoch", "owner", "imp_seq", "decided_seq"):
        meta.pop(field)
    body = orjson.dumps(meta)
    old = b"LOLACKP1" + struct.pack(">I", len(body)) + body + state
    chain = select_chain([(KEY, old)], KEY)
    assert chain.epoch == 0

    def unnumbered(proc):  # the windows' sequence numbers start at their length on an old record
        meta, state = _split_checkpoint(proc.to_checkpoint("events"))
        for field in ("created", "epoch", "owner", "imp_seq", "decided_seq"):
            meta.pop(field, None)
        return meta, state

    assert unnumbered(restore(chain, h.cfg)) == unnumbered(ShardProcessor.from_checkpoint(blob, h.cfg))


def test_contextual_experiments_travel_in_full_in_each_delta():
    spec = {"algorithm": "linucb", "alpha": 0.3, "n_aux": 0,
            "features": {"numeric": {"age": {"mean": 30, "scale": 10}}, "categorical": ["segment"]}}
    wl = Workload(8)
    cfg = ProcessorConfig()
    proc = ShardProcessor(0, cfg)
    recs = [wl._rec(type="variant", experiment_id="c", variant_id=v, text=f"headline {v}",
                    settings={"contextual": spec}) for v in "ab"]
    proc.process(recs, now=1000.0, timestamps=[1000.0] * 2)
    base = proc.mark("events", HEAD)
    tracker = ChainTracker(proc)
    reqs = [wl._rec(type="decision_request", experiment_id="c", request_id=f"r{i}",
                    context={"segment": "young" if i % 2 else "old", "age": 20.0 + i}) for i in range(10)]
    out = proc.process(reqs, now=1001.0, timestamps=[1001.0] * 10)
    imps = [wl._rec(type="impression", experiment_id="c", variant_id=orjson.loads(v)["variant_id"],
                    event_id=f"i{i}", request_id=orjson.loads(v)["request_id"], ts=1001.0)
            for i, (_, v) in enumerate(out.decisions)]
    proc.process(imps, now=1002.0, timestamps=[1002.0] * len(imps))
    d1 = proc.mark_delta(tracker, {**HEAD, "j": 1})
    assert delta_meta(d1)["contextual"] is not None
    back = ShardProcessor.from_chain(base, [d1], cfg)
    assert canon(back) == canon(full_restore(proc, cfg))
    np.testing.assert_array_equal(back.ctx.state.theta[:1], proc.ctx.state.theta[:1])
    assert len(back.ctx.join.entries) == len(proc.ctx.join.entries) > 0


# ---------------------------------------------------------------- review fixes (delta-fixes)
class _Value(bytearray):
    """A record value the test can watch (weak references) to see what a restore keeps."""


class _Msg:
    def __init__(self, key, value):
        self._k, self._v = key, value

    def key(self):
        return self._k

    def value(self):
        return self._v


def _fake_broker(monkeypatch, records, high):
    from lola.stream import worker as worker_mod

    seen = {"begins": [], "alive_at_end": None}

    def read(conf, topic, partition, begin):
        import gc
        import weakref

        seen["begins"].append(begin)
        refs = []
        for key, raw in records[begin:]:
            v = _Value(raw)
            refs.append(weakref.ref(v))
            yield _Msg(key, v)
            del v
        gc.collect()
        seen["alive_at_end"] = sum(r() is not None for r in refs)

    monkeypatch.setattr(worker_mod.kf, "consumer_config", lambda *a: {})
    monkeypatch.setattr(worker_mod.kf, "watermarks", lambda *a: (0, high))
    monkeypatch.setattr(worker_mod.kf, "read_partition_to_end", read)
    return seen


def _fake_worker(deltas: bool):
    from types import SimpleNamespace

    from lola.stream.worker import Worker

    w = SimpleNamespace(settings=SimpleNamespace(group_id="g", checkpoint_deltas=deltas, checkpoint_delta_max_chain=50),
                        topic="events")
    w._checkpoint_key = lambda p: Worker._checkpoint_key(w, p)
    return w, Worker._read_chain


def test_the_restore_read_keeps_only_the_best_base_and_its_deltas(monkeypatch):
    h = History()
    records = []
    for epoch in range(1, 7):
        records += [h.base(epoch), h.delta(epoch), h.delta(epoch)]
    seen = _fake_broker(monkeypatch, records, len(records))
    w, read_chain = _fake_worker(deltas=True)
    chain = read_chain(w, "state", 0)
    assert chain.epoch == 6 and len(chain.deltas) == 2
    assert canon(restore(chain, h.cfg)) == h.truth[chain.next_offset]
    # 18 records read; alive when the read ends: the best base and its two deltas (the last one read)
    assert seen["alive_at_end"] <= 3


def test_with_deltas_disabled_the_restore_reads_the_old_tail(monkeypatch):
    from lola.stream.worker import RESTORE_TAIL

    h = History()
    records = [h.base(0)]
    seen = _fake_broker(monkeypatch, records, 1000)  # the tail holds no base: then the whole partition
    w, read_chain = _fake_worker(deltas=False)
    assert read_chain(w, "state", 0) is not None
    assert seen["begins"] == [1000 - RESTORE_TAIL, 0]


def test_an_id_evicted_and_created_again_within_one_interval_travels_in_full():
    """Reviewer's repro: same row, version, rows and parameters, but a different experiment."""
    cfg = ProcessorConfig()
    proc = ShardProcessor(0, cfg)
    wl = Workload(3)
    proc.process([wl._rec(type="variant", experiment_id="a", variant_id="v0", text="hello"),
                  wl._rec(type="experiment", experiment_id="x", action="create")], now=1000.0, timestamps=[1000.0] * 2)
    proc.process([wl._rec(type="experiment", experiment_id="x", action="archive")], now=1001.0, timestamps=[1001.0])
    base = proc.mark("events", HEAD)
    tracker = ChainTracker(proc)
    t = 1001.0 + proc.experiments["x"].attribution_window_s + 10
    out = proc.process([wl._rec(type="impression", experiment_id="a", variant_id="v0", event_id="i1", ts=t)],
                       now=t, timestamps=[t])
    assert "x" in out.evicted
    proc.process([wl._rec(type="experiment", experiment_id="x", action="create"),
                  wl._rec(type="experiment", experiment_id="x", action="pause")], now=t + 1, timestamps=[t + 1] * 2)
    d1 = proc.mark_delta(tracker, {**HEAD, "j": 1})
    assert "x" in delta_meta(d1)["ids"]
    back = restore(Chain(base, [d1]), cfg)
    assert back.experiments["x"].to_json() == proc.experiments["x"].to_json()
    assert canon(back) == canon(full_restore(proc, cfg))


def test_an_epoch_less_base_later_in_the_log_supersedes_older_chains():
    """A build without deltas (rolling upgrade, rollback) writes bases without epoch or owner."""
    h = History()
    b5, d51 = h.base(5, owner="N"), h.delta(5, owner="N")
    step(h.proc, h.wl, 25, h.rng)
    old_build = (KEY, h.proc.to_checkpoint("events"))  # no chain fields
    h.truth[h.proc.next_offset] = canon(full_restore(h.proc, h.cfg))
    chain, _ = restored([b5, d51, old_build], h)
    assert (chain.base, chain.deltas, chain.epoch, chain.max_epoch) == (old_build[1], [], 5, 5)
    # a new-build base after it (the epoch above) supersedes it again
    b6 = h.base(6, owner="M")
    chain, _ = restored([b5, d51, old_build, b6], h)
    assert chain.base == b6[1]


def test_a_shard_dropped_while_a_round_is_pending_is_not_produced_after_its_new_restore():
    from types import SimpleNamespace
    from unittest.mock import MagicMock

    from lola.stream.checkpoints import Checkpointer, PendingCheckpoint

    produced = []
    w = SimpleNamespace(shards={3: object()}, metrics=MagicMock(), topic="events",
                        deliveries=SimpleNamespace(cleared=lambda: True, barrier_failed=False, release=lambda: None))
    cp = Checkpointer(w)
    cp._produce = lambda p, key, blob, cb: produced.append(p) or True
    cp._commit = lambda *a, **k: None
    cp.pending = PendingCheckpoint({3: (KEY, b"old round", 10)}, 0.0, 0.0)
    cp.drop(3)  # lost; then assigned again to this process and restored
    cp.restored(3, 0)
    cp.advance()
    assert produced == []


def test_a_restore_after_a_lost_round_starts_above_the_epoch_still_in_flight():
    """A record of this process still in flight when its partition was lost may land after the
    same process restored the partition again: the new chain's base must outrank it."""
    from types import SimpleNamespace

    from lola.stream.checkpoints import Checkpointer

    h = History()
    b1 = h.base(1)
    w = SimpleNamespace(settings=SimpleNamespace(checkpoint_deltas=True, checkpoint_delta_max_chain=50),
                        topic="events", _checkpoint_key=lambda p: KEY)
    cp = Checkpointer(w)
    cp.restored(3, 1)                        # restored from B(1): the next base is B(2)
    step(h.proc, h.wl, 25, h.rng)
    _, late = cp._serialise(3, h.proc)       # B(2) serialised and produced, never acknowledged
    assert checkpoint_meta(late)["epoch"] == 2
    cp.drop(3)                               # lost, assigned again, restored from the log (B(1))
    again = ShardProcessor.from_checkpoint(b1[1], h.cfg)
    cp.restored(3, 1)
    _, new = cp._serialise(3, again)
    assert checkpoint_meta(new)["epoch"] == 3
    assert checkpoint_meta(new)["next_offset"] < checkpoint_meta(late)["next_offset"]
    chain = select_chain([b1, (KEY, new), (KEY, late)], KEY)  # the old record lands last
    assert chain.base == new


def test_applying_a_dedup_delta_counts_no_budget_evictions():
    from lola.stream.dedup import DedupWindow

    writer = DedupWindow(10.0, 1 << 20)
    for i in range(5):
        writer.put(f"k{i}", 100.0 + i)
    reader = DedupWindow.from_json(10.0, 1 << 20, writer.to_json(), expire=False)
    seq = writer.seq
    writer.put("late", 200.0)  # the others age out of the window: no budget involved
    assert writer.budget_evictions == 0 and len(writer) == 1
    reader.apply_delta(writer.delta_since(seq))
    assert len(reader) == 1 and "late" in reader and reader.budget_evictions == 0


def test_a_failing_delta_costs_one_rebuild(monkeypatch):
    h = History()
    b1 = h.base(1)
    ds = [h.delta(1) for _ in range(5)]
    bad = ds[1][1][:len(ds[1][1]) - 40] + b"\x00" * 40  # header intact, arrays corrupt
    chain = select_chain([b1, ds[0], (ds[1][0], bad), *ds[2:]], KEY)
    assert len(chain.deltas) == 5
    calls = []
    real = ShardProcessor.from_chain.__func__
    monkeypatch.setattr(ShardProcessor, "from_chain",
                        classmethod(lambda cls, *a, **k: calls.append(len(a[1])) or real(cls, *a, **k)))
    proc = restore(chain, h.cfg)
    assert calls == [5, 1]
    assert canon(proc) == h.truth[delta_meta(ds[0][1])["to_offset"]]


def test_a_restore_takes_at_most_max_deltas():
    h = History()
    records = [h.base(1)] + [h.delta(1) for _ in range(4)]
    chain = select_chain(records, KEY, max_deltas=2)
    assert len(chain.deltas) == 2
    assert canon(restore(chain, h.cfg)) == h.truth[chain.next_offset]
