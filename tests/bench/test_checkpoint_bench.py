"""lola bench checkpoints: a small run prints both figures and its chain restores the live state."""

from __future__ import annotations

import orjson
from typer.testing import CliRunner

from lola.cli import app


def test_a_small_run_reports_full_and_delta_rates_and_an_exact_chain_restore():
    r = CliRunner().invoke(app, ["bench", "checkpoints", "--experiments", "40", "--partitions", "2", "--rate", "200",
                                 "--seconds", "8", "--dedup-budget-bytes", "100000", "--json"])
    assert r.exit_code == 0, r.output
    (run,) = orjson.loads(r.output)["runs"]
    assert run["full_bytes_per_s"] > 0 and run["delta_bytes_per_s"] > 0
    assert run["delta_bytes_per_s"] < run["full_bytes_per_s"]  # the deltas' purpose, at this size too
    assert run["bases"] >= 1 and run["deltas"] >= 1 and run["bases"] + run["deltas"] == 8
    assert run["restore_chain_equals_live_counts_and_window"] is True
