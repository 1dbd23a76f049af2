"""lola bench lifecycle: a small run through a real worker evicts every archived experiment."""

from __future__ import annotations

import pytest

from lola.bench.lifecycle_bench import run

pytestmark = pytest.mark.broker


def test_a_small_run_evicts_every_archived_experiment_and_reports_rss_and_checkpoint_sizes():
    out = run(None, experiments=300, partitions=2)
    assert out["evicted"] == 300 and out["experiments_held_at_end"] == 2
    rss = out["worker_rss_mb"]
    assert 0 < rss["baseline"] and 0 < rss["end"] and rss["end_over_baseline"] == round(rss["end"] / rss["baseline"], 3)
    state = out["state_bytes"]  # each partition's last full checkpoint: written, and back near its size
    assert 0 < state["baseline"] <= state["peak"] and 0 < state["end"]
