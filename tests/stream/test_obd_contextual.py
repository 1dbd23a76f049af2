"""The Open Bandit Dataset sample through the worker's featurizer and the contextual kernels.

The sample has ~40 clicks in 10,000 rows: no learning assertion, only that real logs featurize
(bounded, finite, deterministic), and that the kernels train on them and return valid decisions."""

from __future__ import annotations

import numpy as np
import pytest

from lola.data.obd import FEATURE_SPEC, load_obd
from lola.kernels.contextual_state import ContextualParams, ContextualState
from lola.paths import shared_data_dir
from lola.stream.context import ContextualSettings, Featurizer

K = 4  # the first four items form the arms; other rows train nothing


@pytest.fixture(scope="module")
def obd():
    folder = shared_data_dir() / "obd" / "random" / "all"
    if not folder.is_dir():
        pytest.skip(f"Open Bandit Dataset sample not found at {folder}")
    return load_obd(folder)


def test_obd_logs_load_with_their_propensities(obd):
    logs, n_items = obd
    assert len(logs) == 10_000 and n_items == 80
    assert all(0 < d.propensity <= 1 for d in logs) and 0 < sum(d.click for d in logs) < 200


@pytest.mark.parametrize("algorithm", ["linucb", "falcon"])
def test_contextual_kernels_run_over_the_obd_logs(obd, algorithm):
    logs, _ = obd
    spec = ContextualSettings.parse({"algorithm": algorithm, "features": FEATURE_SPEC}, 8)
    feat = Featurizer(spec.features, 8)
    users = np.stack([feat(d.context) for d in logs])
    assert np.isfinite(users).all() and (users[:, 0] == 1).all() and np.abs(users).max() <= 5
    np.testing.assert_array_equal(users[7], feat(logs[7].context))
    state = ContextualState(4, 8, capacity_experiments=1)
    row = state.add_experiment(spec.params())
    for k in range(K):
        state.add_arm(row, np.eye(4)[k] + np.eye(4)[0] * (k > 0), prior_ctr=0.005)
    shown = np.array([d.item_id % K for d in logs], dtype=np.int64)  # fold the 80 items onto 4 arms
    rows = np.zeros(len(logs), dtype=np.int64)
    clicks = np.array([d.click for d in logs], dtype=np.float64)
    for start in range(0, len(logs), 1000):
        sl = slice(start, start + 1000)
        state.update(rows[sl], shown[sl], users[sl], np.ones(1000), clicks[sl])
        state.refit_due()
        slots, prop = state.select(rows[sl], users[sl], start)
        assert ((slots >= 0) & (slots < K)).all() and ((prop > 0) & (prop <= 1)).all()
    assert state.par[row, 4] == len(logs)
