"""Within the documented bounds, no kernel produces NaN or inf, and select/snapshots never fail.

Issue 15: a conversion worth 1e308, conversion_weight near 1.8e308 or n_aux 2**63-1 made
statistics inf, then NaN, and the snapshot kernel divided by zero. The bounds of
``lola.kernels.params`` / ``api.MAX_UPDATE_VALUE`` reject those; this checks the
extremes that are still legal.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lola.errors import ConfigError, KernelInputError
from lola.kernels import POLICIES, BanditState, ExperimentParams, select, update
from lola.kernels import params as P
from lola.kernels.api import MAX_UPDATE_VALUE

EXTREMES = {
    "alpha": (0.0, 0.08, P.MAX_ALPHA),
    "n_aux": (0.0, 1000.0, P.MAX_N_AUX, math.inf),
    "gamma": (P.MIN_GAMMA, 0.5, 1.0),
    "conversion_weight": (0.0, 1.0, P.MAX_CONVERSION_WEIGHT),
    "bai_delta": (P.MIN_BAI_DELTA, 0.2, 0.999999),
    "bai_epsilon": (0.0, P.MAX_BAI_GAP),
    "bai_gamma": (0.0, 0.005, P.MAX_BAI_GAP),
    "eb_strength": (0.0, 4.0, P.MAX_EB_STRENGTH),
}
VALUES = (0.0, 1.0, 3.0, 1e9, MAX_UPDATE_VALUE)


@pytest.mark.parametrize("field,value", [("alpha", 1e308), ("n_aux", 2.0**63 - 1), ("n_aux", -1.0),
                                         ("conversion_weight", 1.8e308), ("gamma", 1e-300), ("bai_delta", 1e-300),
                                         ("eb_strength", 1e300), ("ridge", 1e-300), ("propensity_draws", 10**9)])
def test_out_of_bound_parameters_are_config_errors(field, value):
    with pytest.raises(ConfigError, match=field):
        ExperimentParams(**{field: value})


def test_update_rejects_values_above_the_bound():
    state = BanditState(1, 2)
    r = state.add_experiment(ExperimentParams())
    state.add_arm(r, 0.1)
    one = np.array([r], dtype=np.int64)
    for bad in (1e308, math.inf, math.nan, MAX_UPDATE_VALUE * 2):
        with pytest.raises(KernelInputError, match="conversion_value"):
            update(state, one, np.zeros(1, np.int64), np.ones(1), np.zeros(1), np.array([bad]))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=st.sampled_from(POLICIES),
       picks=st.fixed_dictionaries({k: st.sampled_from(v) for k, v in EXTREMES.items()}),
       steps=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(VALUES), st.sampled_from(VALUES),
                                st.sampled_from(VALUES), st.integers(0, 9)), min_size=1, max_size=12),
       priors=st.lists(st.sampled_from((None, 0.0, 0.01, 1.0)), min_size=4, max_size=4))
def test_legal_extremes_never_give_nan_inf_or_a_failed_select(policy, picks, steps, priors):
    params = dict(picks, policy=policy, horizon=20 if policy == "ec" else None)
    try:
        p = ExperimentParams(**params, bai_radius="hoeffding")
    except ConfigError:
        return  # e.g. other cross-field rules; the bounds themselves are tested above
    state = BanditState(1, 4, feature_dim=2 if "linucb" in policy else 0)
    r = state.add_experiment(p)
    for k, prior in enumerate(priors):
        state.add_arm(r, prior, np.array([1.0, 0.5 * k]) if "linucb" in policy else None)
    row = np.array([r], dtype=np.int64)
    for i, (slot, w, c, v, retire) in enumerate(steps):
        update(state, row, np.array([slot], dtype=np.int64), np.array([w]), np.array([c]), np.array([v]))
        if retire == 0 and int(state.active[r].sum()) > 1:
            state.retire_arm(r, int(np.flatnonzero(state.active[r, :4])[0]))
        for name in ("impressions", "clicks", "conversions", "ucb", "ainv", "bvec", "z"):
            arr = getattr(state, name)
            assert not np.isnan(arr).any(), name
        for name in ("impressions", "clicks", "conversions", "ainv", "bvec", "z"):
            assert np.isfinite(getattr(state, name)).all(), name
        slots, prop = select(state, row, i)
        assert state.active[r, slots[0]] and 0.0 < prop[0] <= 1.0
        summary = state.experiment_summary(r, seed=i)
        shares = [a["serving_share"] for a in summary["arms"]]
        assert all(math.isfinite(s) for s in shares) and abs(sum(shares) - 1.0) < 1e-9, shares
