"""A small closed loop through the worker's processor: decisions, events and snapshots (no broker)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from lola.stream.decision_log import join_stream
from lola.stream.processor import ShardProcessor
from lola.stream.shard import ProcessorConfig


def closed_loop(seed: int = 0, experiments: int = 3, arms: int = 3, steps: int = 40, batch: int = 50):
    rng = np.random.default_rng(seed)
    ctr = rng.uniform(0.02, 0.25, (experiments, arms))
    proc = ShardProcessor(0, ProcessorConfig(stats_interval_s=0.0))
    events, decisions, off = [], [], 0

    def feed(evs, now):
        nonlocal off
        recs = [(off + i, e["experiment_id"].encode(), orjson.dumps(e)) for i, e in enumerate(evs)]
        off += len(recs)
        events.extend(e for e in evs if e["type"] != "decision_request")
        return proc.process(recs, now=now)

    feed([{"type": "variant", "experiment_id": f"e{e}", "variant_id": f"v{k}", "text": f"t{k}",
           **({"settings": {"policy": "llm_ts", "n_aux": 100.0}} if k == 0 else {})}
          for e in range(experiments) for k in range(arms)], 1000.0)
    for e in range(experiments):
        for k in range(arms):
            proc.apply_prior(f"e{e}", f"v{k}", float(np.clip(ctr[e, k] + rng.normal(0, 0.03), 0.001, 0.9)))
    req = 0
    for step in range(steps):
        now = 1000.0 + step
        out = feed([{"type": "decision_request", "experiment_id": f"e{rng.integers(experiments)}",
                     "request_id": f"r{req + i}"} for i in range(batch)], now)
        req += batch
        outcomes = []
        for _, value in out.decisions:
            d = orjson.loads(value)
            decisions.append(d)
            base = {"experiment_id": d["experiment_id"], "variant_id": d["variant_id"], "ts": now}
            outcomes.append({"type": "impression", "event_id": "i" + d["request_id"], "request_id": d["request_id"], **base})
            if rng.random() < ctr[int(d["experiment_id"][1:]), int(d["variant_id"][1:])]:
                outcomes.append({"type": "click", "event_id": "c" + d["request_id"], "request_id": d["request_id"], **base})
        feed(outcomes, now)
    snapshots = {e: orjson.loads(orjson.dumps(proc.snapshot(e, 2000.0))) for e in proc.experiments}
    return join_stream(events, decisions), snapshots


@pytest.fixture(scope="session")
def loop_data():
    return closed_loop()
