"""The worker's default LOLA setting comes from one file, written by the replay."""

from __future__ import annotations

import json

import pytest

from lola.data import worker_defaults as wd
from lola.errors import DataError
from lola.stream.settings import StreamSettings


def test_settings_defaults_are_the_committed_file(monkeypatch):
    monkeypatch.delenv("LOLA_DEFAULT_ALPHA", raising=False)
    monkeypatch.delenv("LOLA_DEFAULT_N_AUX", raising=False)
    doc = json.loads(wd.DEFAULTS_FILE.read_text())
    s = StreamSettings.load()
    assert (s.default_policy, s.default_alpha, s.default_n_aux) == (doc["policy"], doc["alpha"], doc["n_aux"])
    assert "one_setting_for_all_horizons" in doc["from"]


def test_write_then_load_round_trips(tmp_path):
    one = {"policy": "LOLA", "params": {"alpha": 0.06, "n_aux": 1400.0}, "tune_shortfall_pct_mean": 0.5}
    doc = wd.load(wd.write(tmp_path / "d.json", one, "a test"))
    assert (doc["alpha"], doc["n_aux"], doc["from"]) == (0.06, 1400.0, "a test")


@pytest.mark.parametrize("bad", [{"policy": "llm2ucb", "alpha": -1, "n_aux": 1.0},
                                 {"policy": "llm2ucb", "alpha": 0.1, "n_aux": "many"},
                                 {"policy": "ucb", "alpha": 0.1, "n_aux": 1.0}])
def test_a_broken_file_is_a_data_error(tmp_path, bad):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError):
        wd.load(path)
