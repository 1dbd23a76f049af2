"""LinUCB warm starts: `lola experiments warm-start` from a CSV of past tests, loaded by the
worker's processor per experiment by the `warm_start` setting."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from lola.cli import main
from lola.errors import ConfigError
from lola.kernels import ExperimentParams
from lola.stream.features import text_features
from lola.stream.processor import ShardProcessor
from lola.stream.shard import ProcessorConfig
from lola.stream.warm_start import WARM_START_WEIGHT, load_dir, read_past_tests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "kernels"))  # tests/ has no packages
from kernels_twin import Twin  # noqa: E402

PAST = [("t1", "Ten things you never knew", 5000, 100), ("t1", "Why the city is sinking", 5000, 160),
        ("t2", "A short history of bread", 3000, 30), ("t2", "never shown", 0, 0)]
D = 6


def write_csv(path: Path, rows=PAST) -> Path:
    lines = ["experiment_id,text,impressions,clicks"] + [f'{e},"{t}",{n},{c}' for e, t, n, c in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def rec(offset: int, **event) -> tuple[int, bytes, bytes]:
    return offset, event["experiment_id"].encode(), orjson.dumps(event)


def test_rows_reproduce_the_weighted_sums_of_past_impressions(tmp_path):
    X, r, tests = read_past_tests(write_csv(tmp_path / "past.csv"), D)
    x = np.array([text_features(t, D) for _, t, _, _ in PAST])
    n = np.array([p[2] for p in PAST], float)
    c = np.array([p[3] for p in PAST], float)
    assert tests == 2 and X.shape == (3, D)  # the variant without impressions adds nothing
    np.testing.assert_allclose(X.T @ X, WARM_START_WEIGHT * (x * n[:, None]).T @ x, rtol=1e-12)
    np.testing.assert_allclose(X.T @ r, WARM_START_WEIGHT * x.T @ c, rtol=1e-12)


@pytest.mark.parametrize("rows,message", [
    ([("t", "x", 3, 5)], "clicks <= impressions"),
    ([("t", "x", "many", 1)], "must be numbers"),
    ([], "no rows"),
])
def test_bad_past_tests_are_one_clear_error(tmp_path, rows, message):
    with pytest.raises(ConfigError, match=message):
        read_past_tests(write_csv(tmp_path / "p.csv", rows), D)


def test_command_writes_what_the_processor_applies(tmp_path, capsys):
    main(["experiments", "warm-start", str(write_csv(tmp_path / "past.csv")), "--out",
          str(tmp_path / "ws" / "news.npz"), "--feature-dim", str(D)])
    assert orjson.loads(capsys.readouterr().out)["rows"] == 3
    warm = load_dir(tmp_path / "ws", D)
    assert set(warm) == {"news"}
    with pytest.raises(ConfigError, match="feature_dim"):
        load_dir(tmp_path / "ws", D + 1)
    with pytest.raises(ConfigError, match="not a folder"):
        load_dir(tmp_path / "nope", D)

    proc = ShardProcessor(0, ProcessorConfig(feature_dim=D, warm_starts=warm))
    texts = {"a": "Ten things about bread", "b": "The city you never knew"}
    out = proc.process([rec(i, type="variant", experiment_id="x", variant_id=v, text=t,
                            **({"settings": {"policy": "linucb", "warm_start": "news", "min_traffic": 0.1}}
                               if i == 0 else {}))
                        for i, (v, t) in enumerate(texts.items())])
    assert out.dead_letters == []
    twin = Twin(D)
    row = twin.add_experiment(ExperimentParams(policy="linucb", min_traffic=0.1))
    twin.warm_start(row, *warm["news"])
    for t in texts.values():
        twin.add_arm(row, None, text_features(t, D))
    want = twin.allocation(row)
    cold = Twin(D)
    cold.add_experiment(ExperimentParams(policy="linucb", min_traffic=0.1))
    for t in texts.values():
        cold.add_arm(0, None, text_features(t, D))
    assert not np.allclose(want, cold.allocation(0))  # the warm start changes the allocation here
    decisions = proc.process([rec(10 + i, type="decision_request", experiment_id="x", request_id=f"r{i}")
                              for i in range(10)]).decisions
    for _, v in decisions:
        d = orjson.loads(v)
        assert d["propensity"] == pytest.approx(want[list(texts).index(d["variant_id"])], abs=1e-12)
    back = ShardProcessor.from_checkpoint(proc.to_checkpoint("events"))  # no warm starts loaded: state carries A, b
    np.testing.assert_array_equal(back.state.ainv, proc.state.ainv)
    np.testing.assert_array_equal(back.state.bvec, proc.state.bvec)


@pytest.mark.parametrize("settings,detail", [
    ({"policy": "linucb", "warm_start": "other"}, "no warm start named"),
    ({"policy": "ucb", "warm_start": "news"}, "needs a linucb/llm_linucb policy"),
    ({"policy": "linucb", "warm_start": 3}, "settings.warm_start must match"),
    ({"policy": "linucb", "warm_start": "../etc"}, "settings.warm_start must match"),
])
def test_a_bad_warm_start_setting_is_a_dead_letter(settings, detail):
    warm = {"news": (np.ones((2, D)), np.ones(2))}
    proc = ShardProcessor(0, ProcessorConfig(feature_dim=D, warm_starts=warm))
    out = proc.process([rec(0, type="variant", experiment_id="x", variant_id="a", text="t", settings=settings)])
    assert [d.reason for d in out.dead_letters] == ["invalid_settings"] and detail in out.dead_letters[0].detail
    assert proc.experiments == {}
