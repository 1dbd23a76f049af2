"""The decision/outcome join, target policies, Li et al.'s replay and the ``lola evaluate`` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lola.errors import ConfigError, LolaError
from lola.evaluate.cli import run
from lola.stream.decision_log import Log, join_stream
from lola.evaluate.policies import policy_table, replay

OBD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "obd"


def stream(n: int = 6):
    events = [{"type": "variant", "experiment_id": "e", "variant_id": v, "text": v} for v in ("a", "b")]
    decisions = []
    for i in range(n):
        v = "ab"[i % 2]
        decisions.append({"request_id": f"r{i}", "experiment_id": "e", "variant_id": v, "propensity": 0.5, "ts": i})
        if i != 5:  # r5's impression never arrives
            events.append({"type": "impression", "experiment_id": "e", "variant_id": v, "event_id": f"i{i}",
                           "request_id": f"r{i}", "ts": i})
    events.append({"type": "click", "experiment_id": "e", "variant_id": "a", "event_id": "c0", "request_id": "r0", "ts": 1})
    events.append({"type": "click", "experiment_id": "e", "variant_id": "b", "event_id": "c1", "impression_id": "i3", "ts": 4})
    events.append({"type": "click", "experiment_id": "e", "variant_id": "b", "event_id": "c2", "impression_id": "nope", "ts": 4})
    events.append({"type": "impression", "experiment_id": "e", "variant_id": "b", "event_id": "i9", "request_id": "r9", "ts": 9})
    decisions.append(dict(decisions[0]))  # a retried request: one round
    return events, decisions


def test_join_by_request_id_and_logging_health():
    log = join_stream(*stream())
    assert log.action.tolist() == [0, 1, 0, 1, 0]
    assert log.reward.tolist() == [1, 0, 0, 1, 0]  # r0 by request id, r3 through its impression id
    assert log.health == {"decisions": 6, "joined": 5, "no_impression": 1, "impressions_without_decision": 1,
                          "clicks_without_decision": 1}


def test_policies_uniform_file_and_snapshot(tmp_path):
    log = join_stream(*stream())
    assert policy_table(log, "uniform", None)["e"].tolist() == [0.5, 0.5]
    (tmp_path / "alloc.json").write_text(json.dumps({"e": {"a": 3, "b": 1}}))
    assert policy_table(log, f"file:{tmp_path / 'alloc.json'}", None)["e"].tolist() == [0.75, 0.25]
    snaps = {"e": {"arms": {"a": {"serving_share": 0.2, "prior": 0.3}, "b": {"serving_share": 0.8, "prior": None}}}}
    assert policy_table(log, "snapshot", snaps)["e"].tolist() == [0.2, 0.8]
    with pytest.raises(ConfigError):
        policy_table(log, "greedy", None)
    # DR's model term: the prior where there is one, the logged click rate where not
    out = run(log, snaps, False, "uniform", 0, 0, 20.0, None)
    assert out["n"] == 5 and set(out["estimates"]) == {"ips", "snips", "dr", "switch_dr"}
    assert out["estimates"]["ips"]["value"] == pytest.approx(0.4)
    assert "warnings" not in out
    snaps["e"]["ope"] = {"supported": False, "needs_floor": True, "min_traffic": 0.0}
    assert "min_traffic" in run(log, snaps, False, "uniform", 0, 0, 20.0, None)["warnings"][0]


def test_replay_counts_only_matching_rounds_and_needs_uniform_logs():
    rng = np.random.default_rng(0)
    n, k = 4000, 4
    action = rng.integers(0, k, n)
    reward = (rng.random(n) < np.array([0.02, 0.02, 0.02, 0.3])[action]).astype(float)
    log = Log(["e"] * n, action, reward, np.full(n, 1 / k), np.arange(n, dtype=float), {"e": list("abcd")})
    got = replay(log, "ts", None)["rewards"]
    assert n / k / 2 < len(got) < n / k * 2
    assert got.mean() > 0.15  # TS finds the 30 % arm: far above the uniform value 0.09
    skewed = Log(["e"] * n, action, reward, np.where(action == 0, 0.7, 0.1), np.arange(n, dtype=float),
                 {"e": list("abcd")})
    with pytest.raises(LolaError, match="uniform"):
        replay(skewed, "ts", None)


@pytest.mark.skipif(not OBD.is_dir(), reason=f"{OBD} not found")
def test_evaluate_command_on_the_open_bandit_dataset():
    out = subprocess.run([sys.executable, "-m", "lola.cli", "evaluate", "--log", f"obd:{OBD / 'random' / 'all'}",
                          "--policy", "uniform", "--resamples", "100", "--json"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["policy"] == "uniform" and got["n"] == 10_000
    # the logging policy is uniform: IPS with the uniform target is the logged mean exactly
    assert got["estimates"]["ips"]["value"] == pytest.approx(got["logged_mean_reward"], abs=1e-12)
    lo, hi = got["estimates"]["snips"]["ci"]
    assert lo <= got["estimates"]["snips"]["value"] <= hi
    bad = subprocess.run([sys.executable, "-m", "lola.cli", "evaluate", "--log", "obd:/no/such"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
