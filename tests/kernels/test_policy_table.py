"""The one policy table: params, kernels, stream and docs all read it (contract tests)."""

from __future__ import annotations

import math
import re
from dataclasses import fields
from pathlib import Path

import pytest

from lola.errors import ConfigError
from lola.kernels import POLICIES, POLICY_TABLE, BanditState, ExperimentParams, core
from lola.kernels.policy_table import COMMON, SETTINGS, markdown_table
from lola.stream import events as ev

ROOT = Path(__file__).resolve().parents[2]


def test_codes_are_the_kernels_codes_and_dense():
    assert sorted(p.code for p in POLICY_TABLE.values()) == list(range(len(POLICY_TABLE)))
    assert {name: getattr(core, "P_" + name.upper()) for name in POLICIES} == {n: p.code for n, p in POLICY_TABLE.items()}


def test_every_params_field_is_a_table_setting_with_its_default():
    names = [f.name for f in fields(ExperimentParams) if f.name != "policy"]
    assert set(names) == set(SETTINGS)
    default = ExperimentParams()
    assert all(getattr(default, n) == SETTINGS[n].default for n in names)
    for p in POLICY_TABLE.values():
        assert set(p.settings) <= set(SETTINGS) and not set(p.settings) & set(COMMON)


@pytest.mark.parametrize("name", POLICIES)
def test_each_policy_accepts_its_settings_and_rejects_the_others(name):
    row = POLICY_TABLE[name]
    base = {"policy": name, "horizon": 100}
    ExperimentParams.from_dict({**base, **{s: SETTINGS[s].default for s in row.accepts if s != "horizon"}})
    for other in set(SETTINGS) - set(row.accepts):
        with pytest.raises(ConfigError, match=f"^policy '{name}' does not use {other}; it reads "):
            ExperimentParams.from_dict({**base, other: SETTINGS[other].default})


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_every_bound_in_the_table_is_enforced(name):
    s = SETTINGS[name]
    policy = next(p for p in POLICIES if name in POLICY_TABLE[p].accepts)
    if s.choices:
        bad = ["nope"]
    else:
        bad = [s.lo - 1 if not s.lo_open else s.lo, s.hi * 10 if not s.hi_open else s.hi, math.nan, "1", True]
    for value in bad:
        with pytest.raises(ConfigError, match=f"^{name} must"):
            ExperimentParams.from_dict({"policy": policy, "horizon": 10, name: value})


def test_needs_horizon_and_needs_features_are_enforced():
    for p in POLICY_TABLE.values():
        if p.needs_horizon:
            with pytest.raises(ConfigError, match="needs a horizon"):
                ExperimentParams(policy=p.name)
        if p.needs_features:
            with pytest.raises(ConfigError, match="feature_dim"):
                BanditState(2, 2).add_experiment(ExperimentParams(policy=p.name))


def test_prior_free_policies_run_without_the_prior():
    for p in POLICY_TABLE.values():
        params = ExperimentParams(policy=p.name, horizon=10)
        assert (params.effective_n_aux != 0.0) == p.uses_prior


def test_stream_accepts_exactly_the_table_settings():
    ok = {"type": "variant", "experiment_id": "e", "variant_id": "a", "text": "t",
          "settings": {"policy": "ts", "horizon": 1000, "ts_alpha0": 1.38, "ts_beta0": 96.11, "min_traffic": 0.05,
                       "burn_in": 10, "propensity_draws": 16, "attribution_window_s": 60}}
    assert ev.decode(ev.encode_event(ok)).settings["ts_beta0"] == 96.11
    with pytest.raises(Exception, match="unknown setting"):
        ev.decode(ev.encode_event({**ok, "settings": {"colour": 1}}))


def test_docs_table_is_current():
    text = (ROOT / "docs" / "policies.md").read_text()
    block = re.search(r"<!-- policy-table:start -->\n(.*)<!-- policy-table:end -->", text, re.S)
    assert block and block.group(1) == markdown_table(), "regenerate docs/policies.md from markdown_table()"


def test_the_replay_names_table_policies():
    from lola.replay.protocol import POLICY_KERNELS

    assert set(POLICY_KERNELS.values()) <= set(POLICY_TABLE)
