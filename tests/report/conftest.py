"""A small closed loop through the worker's processor (lola bench ope's): decisions, events, snapshots."""

from __future__ import annotations

import orjson
import pytest

from lola.bench.ope_bench import closed_loop
from lola.stream.decision_log import join_stream


def loop_log_and_snapshots(seed: int = 0):
    loop = closed_loop(seed, experiments=3, arms=3, rounds=700, min_traffic=0.0, n_aux=100.0, batch=50,
                       prior_noise=0.03, stats_interval_s=0.0, t0=1000.0)
    snapshots = {e: orjson.loads(orjson.dumps(loop.proc.snapshot(e, 2000.0))) for e in loop.proc.experiments}
    return join_stream(loop.events, loop.decisions), snapshots


@pytest.fixture(scope="session")
def loop_data():
    return loop_log_and_snapshots()
