"""lola bench serve: argument checks and the synthetic snapshot it publishes (the run itself is a benchmark)."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from lola.bench.serve_bench import _snapshot
from lola.cli import app
from lola.client.edge import plan_of
from lola.errors import ConfigError


@pytest.mark.parametrize("args", [["--arms", "1"], ["--http-rates", "x"], ["--http-rates", "0"], ["--decisions", "10"]])
def test_bad_arguments_are_refused_before_any_work(args):
    r = CliRunner().invoke(app, ["bench", "serve", *args])
    assert isinstance(r.exception, ConfigError)


def test_published_snapshots_are_valid_and_servable():
    snap = orjson.loads(_snapshot("e", 3, 2, 1000.0))
    plan = plan_of(snap)
    assert plan is not None and plan.allocation.ids == ("v0", "v1", "v2") and plan.valid_until == 1030.0
    assert sum(plan.allocation.probs) == pytest.approx(1.0)
