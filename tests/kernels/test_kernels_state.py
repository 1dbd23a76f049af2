"""BanditState: growth, round trip, snapshots; and every bad input in one place."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lola.errors import ConfigError, KernelInputError, LolaError
from lola.kernels import POLICIES, BanditState, ExperimentParams, select, simulate, update

ARRAYS = ("impressions", "clicks", "conversions", "mu_aux", "has_prior", "active", "candidate", "ucb", "exp_f",
          "policy", "n_arms", "bai_done", "ec_committed", "features", "z", "ainv", "bvec")


def populated(d=3):
    rng = np.random.default_rng(0)
    state = BanditState(capacity_experiments=1, capacity_arms=1, feature_dim=d)
    for pol in POLICIES:
        p = ExperimentParams(policy=pol, horizon=50 if pol == "ec" else None,
                             n_aux=math.inf if pol == "llm_ts" else 500.0, gamma=0.99 if pol == "ucb" else 1.0)
        r = state.add_experiment(p)
        for k in range(3):
            state.add_arm(r, None if k == 2 else float(rng.uniform(0.01, 0.1)), rng.normal(size=d))
    rows = np.arange(state.n_experiments, dtype=np.int64)
    for i in range(20):
        slots, _ = select(state, rows, i)
        update(state, rows, slots, np.ones(len(rows)), (rng.random(len(rows)) < 0.3) * 1.0, rng.random(len(rows)))
    return state


class TestState:
    def test_capacity_grows_and_keeps_stats(self):
        state = populated()
        assert state.capacity_experiments >= len(POLICIES) and state.capacity_arms >= 3
        assert state.steps.sum() == 20 * len(POLICIES)  # raw impressions (ucb here is discounted)

    def test_round_trip_is_exact(self):
        state = populated()
        clone = BanditState.from_bytes(state.to_bytes())
        n = state.n_experiments
        for name in ARRAYS:
            a, b = getattr(state, name)[:n], getattr(clone, name)[:n]
            assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), name
        assert [clone.params(r) for r in range(n)] == [state.params(r) for r in range(n)]
        rows = np.arange(n, dtype=np.int64)
        for s in (state, clone):  # and it behaves identically afterwards
            s._last = select(s, rows, 99)
        np.testing.assert_array_equal(state._last[0], clone._last[0])
        np.testing.assert_array_equal(state._last[1], clone._last[1])

    @pytest.mark.parametrize("policy", ["llm2ucb", "llm_linucb", "llm_bai"])
    def test_bulk_registration_equals_one_by_one(self, policy):
        rng = np.random.default_rng(3)
        prior = rng.uniform(0.01, 0.1, size=(7, 3))
        prior[2, 1] = np.nan
        feats = rng.normal(size=(7, 3, 4))
        p = ExperimentParams(policy=policy, ridge=2.0)
        one, bulk = BanditState(2, 1, feature_dim=4), BanditState(2, 1, feature_dim=4)
        one.add_experiment(p)
        one.add_arm(0, 0.5, feats[0, 0])
        bulk.add_experiment(p)
        bulk.add_arm(0, 0.5, feats[0, 0])
        for e in range(7):
            r = one.add_experiment(p)
            for k in range(3):
                one.add_arm(r, None if np.isnan(prior[e, k]) else prior[e, k], feats[e, k])
        rows = bulk.add_experiments(p, prior, feats)
        assert rows.tolist() == list(range(1, 8))
        n = one.n_experiments
        assert bulk.n_experiments == n
        for name in ARRAYS:
            a, b = getattr(one, name)[:n], getattr(bulk, name)[:n]
            k = min(a.shape[1], b.shape[1]) if a.ndim > 1 and name not in ("exp_f",) else None
            if name == "ucb":
                a, b = a[:, :, :3], b[:, :, :3]
            elif k is not None and name not in ("ainv", "bvec"):
                a, b = a[:, :3], b[:, :3]
            np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=1e-15, err_msg=name)

    def test_from_bytes_rejects_garbage_and_other_versions(self):
        with pytest.raises(KernelInputError, match="not a BanditState blob"):
            BanditState.from_bytes(b"nope")
        blob = populated().to_bytes()
        import io
        with np.load(io.BytesIO(blob)) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays["__meta__"].tobytes())
        meta["version"] = 999
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        with pytest.raises(KernelInputError, match="version 999"):
            BanditState.from_bytes(buf.getvalue())

    @pytest.mark.parametrize("version", [1, 2])
    def test_blob_from_before_the_appended_columns_still_loads(self, version):
        """Checkpoints written before F_BAI_BERNSTEIN (version 1: 20 columns, no ``bai_radius``)
        or before the TS refresh (version 2: 21 columns, 4 ucb rows, no ``ts_refresh``) load with
        those settings' defaults and without a TS reference, and behave identically otherwise."""
        import io

        from lola.kernels import core

        state = populated()
        with np.load(io.BytesIO(state.to_bytes())) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["exp_f"] = arrays["exp_f"][:, : core.F_BAI_BERNSTEIN if version == 1 else core.F_TS_REFRESH]
        arrays["ucb"] = arrays["ucb"][:, :4]
        meta = json.loads(arrays["__meta__"].tobytes())
        meta["version"] = version
        for p in meta["params"]:
            p.pop("ts_refresh")
            if version == 1:
                p.pop("bai_radius")
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        old = BanditState.from_bytes(buf.getvalue())
        n = state.n_experiments
        assert np.array_equal(old.exp_f[:n, :core.F_TS_REF], state.exp_f[:n, :core.F_TS_REF], equal_nan=True)
        assert np.all(old.exp_f[:n, core.F_TS_REF] == core.REF_NONE)  # TS takes a reference at its next decision
        assert np.array_equal(old.ucb[:n, :4], state.ucb[:n, :4], equal_nan=True)
        assert all(old.params(r).bai_radius == "hoeffding" for r in range(n))
        assert all(old.params(r).ts_refresh == ExperimentParams().ts_refresh for r in range(n))

    def test_experiment_summary_is_json_ready(self):
        state = populated()
        for r in range(state.n_experiments):
            summary = state.experiment_summary(r)
            json.dumps(summary, allow_nan=False)
            shares = [a["serving_share"] for a in summary["arms"]]
            assert sum(shares) == pytest.approx(1.0), summary["policy"]
            assert summary["arms"][2]["prior"] is None

    def test_named_views(self):
        state = populated()
        assert state.alpha.shape == (state.n_experiments,)
        assert state.n_aux[POLICIES.index("pure_llm")] == math.inf
        assert state.n_aux[POLICIES.index("ucb")] == 0.0
        assert np.all(state.t == 21.0) or state.gamma.min() < 1.0


class TestBadInput:
    """Each broken rule gives one clear error (ConfigError / KernelInputError, both LolaError)."""

    @pytest.mark.parametrize("kwargs, message", [
        (dict(policy="nope"), "policy must be one of"),
        (dict(alpha=-0.1), r"alpha must be in \[0, 1e\+06\]"),
        (dict(alpha=math.inf), r"alpha must be in \[0, 1e\+06\]"),
        (dict(alpha="0.1"), "alpha must be a number"),
        (dict(n_aux=-1.0), r"n_aux must be in \[0, 1e\+12\]"),
        (dict(n_aux=math.nan), "n_aux must not be NaN"),
        (dict(gamma=0.0), r"gamma must be in \[1e-06, 1\]"),
        (dict(gamma=1.5), r"gamma must be in \[1e-06, 1\]"),
        (dict(conversion_weight=-1.0), r"conversion_weight must be in \[0, 1e\+06\]"),
        (dict(policy="ec"), "needs a horizon"),
        (dict(horizon=0), "horizon must be an integer in"),
        (dict(horizon=2.5), "horizon must be an integer"),
        (dict(explore_fraction=0.0), r"explore_fraction must be in \(0, 1\]"),
        (dict(min_traffic=1.0), r"min_traffic must be in \[0, 1\)"),
        (dict(burn_in=-1), "burn_in must be an integer in"),
        (dict(ts_alpha0=0.0), r"ts_alpha0 must be in \(0,"),
        (dict(ts_beta0=-2.0), r"ts_beta0 must be in \(0,"),
        (dict(eb_strength=-1.0), r"eb_strength must be in \[0,"),
        (dict(linucb_alpha=-1.0), r"linucb_alpha must be in \[0,"),
        (dict(ridge=0.0), r"ridge must be in \[1e-12,"),
        (dict(bai_gamma=-0.1), r"bai_gamma must be in \[0,"),
        (dict(bai_delta=1.0), r"bai_delta must be in \[1e-12, 1\)"),
        (dict(bai_radius="kl"), "bai_radius must be one of hoeffding, bernstein"),
        (dict(bai_radius="bernstein", conversion_weight=1.0), "bai_radius 'bernstein' needs conversion_weight 0"),
        (dict(propensity_draws=0), "propensity_draws must be an integer in"),
        (dict(burn_in=True), "burn_in must be an integer"),
    ])
    def test_params(self, kwargs, message):
        with pytest.raises(ConfigError, match=message):
            ExperimentParams(**kwargs)

    def test_params_are_frozen_and_unknown_keys_rejected(self):
        p = ExperimentParams()
        with pytest.raises(AttributeError):
            p.alpha = 1.0  # type: ignore[misc]
        with pytest.raises(ConfigError, match="unknown experiment parameter"):
            ExperimentParams.from_dict({"alpha": 0.1, "n_aux_typo": 3})

    def _state(self):
        state = BanditState(4, 2)
        r = state.add_experiment(ExperimentParams())
        state.add_arm(r, 0.02)
        state.add_arm(r)
        return state

    @pytest.mark.parametrize("rows, randomness, message", [
        (np.zeros(2, np.int32), 1, "rows must have dtype int64"),
        ([0, 0], 1, "rows must be a numpy array"),
        (np.zeros((2, 1), np.int64), 1, "rows must be one-dimensional"),
        (np.array([0, 5], np.int64), 1, r"rows must be experiment rows in \[0, 1\)"),
        (np.zeros(2, np.int64), -1, "seed must be an integer"),
        (np.zeros(2, np.int64), np.zeros((2, 3)), "randomness must be"),
        (np.zeros(2, np.int64), np.zeros((2, 2)), r"open interval \(0, 1\)"),
        (np.zeros(2, np.int64), 1.5, "randomness must be"),
    ])
    def test_select(self, rows, randomness, message):
        with pytest.raises(KernelInputError, match=message):
            select(self._state(), rows, randomness)

    @pytest.mark.parametrize("field, value, message", [
        ("slots", np.zeros(2, np.int32), "slots must have dtype int64"),
        ("slots", np.array([0, 7]), "slot 7 does not exist"),
        ("impressions", np.ones(3), "impressions must have length 2"),
        ("clicks", np.array([1.0, -1.0]), r"clicks must be in \[0, 1e\+12\]"),
        ("conversion_value", np.array([np.nan, 0.0]), r"conversion_value must be in \[0, 1e\+12\]"),
        ("impressions", np.ones(2, np.float32), "impressions must have dtype float64"),
    ])
    def test_update(self, field, value, message):
        args = dict(slots=np.array([0, 1]), impressions=np.ones(2), clicks=np.zeros(2), conversion_value=np.zeros(2))
        args[field] = value
        with pytest.raises(KernelInputError, match=message):
            update(self._state(), np.zeros(2, np.int64), **args)

    def test_state_methods(self):
        state = self._state()
        with pytest.raises(KernelInputError, match="prior_ctr must be a finite number in"):
            state.add_arm(0, 1.5)
        with pytest.raises(KernelInputError, match="prior_ctr must be a number"):
            state.set_prior(0, 0, "high")
        with pytest.raises(KernelInputError, match="arm slot must be an integer in"):
            state.set_prior(0, 9, 0.1)
        with pytest.raises(KernelInputError, match="experiment row must be"):
            state.retire_arm(3, 0)
        with pytest.raises(ConfigError, match="needs a BanditState with feature_dim > 0"):
            state.add_experiment(ExperimentParams(policy="linucb"))
        with pytest.raises(ConfigError, match="capacity_arms must be an integer >= 1"):
            BanditState(4, 0)
        lin = BanditState(2, 2, feature_dim=3)
        r = lin.add_experiment(ExperimentParams(policy="linucb"))
        with pytest.raises(KernelInputError, match="needs features"):
            lin.add_arm(r, 0.1)
        with pytest.raises(KernelInputError, match="features must be 3 finite numbers"):
            lin.add_arm(r, 0.1, np.ones(4))
        with pytest.raises(KernelInputError, match="X must be float64"):
            lin.warm_start_linear(r, np.ones((5, 2)), np.ones(5))

    def test_no_active_arm_and_simulate_args(self):
        state = self._state()
        state.retire_arm(0, 0)
        state.retire_arm(0, 1)
        with pytest.raises(KernelInputError, match="has no active arm"):
            select(state, np.zeros(1, np.int64), 1)
        with pytest.raises(KernelInputError, match="true_ctr must be float64"):
            simulate(self._state(), np.zeros(1, np.int64), 5, np.ones((1, 1)), 1)
        with pytest.raises(KernelInputError, match="steps must be an integer >= 0"):
            simulate(self._state(), np.zeros(1, np.int64), -1, np.ones((1, 2)), 1)

    def test_all_are_lola_errors(self):
        assert issubclass(ConfigError, LolaError) and issubclass(KernelInputError, LolaError)


# ------------------------------------------------------------------ properties
stats = st.lists(st.tuples(st.integers(0, 500), st.floats(0, 1), st.one_of(st.none(), st.floats(0, 0.2))),
                 min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(arms=stats, n_aux=st.sampled_from([0.0, 1.0, 100.0, 1000.0, math.inf]),
       floor=st.sampled_from([0.0, 0.01, 0.3]), policy=st.sampled_from(["llm2ucb", "ts", "llm_ts", "ucb"]),
       seed=st.integers(0, 2**32))
def test_propensity_is_a_probability_of_an_active_arm(arms, n_aux, floor, policy, seed):
    state = BanditState(1, 1)
    r = state.add_experiment(ExperimentParams(policy=policy, n_aux=n_aux, min_traffic=floor, propensity_draws=8))
    for n, rate, prior in arms:
        k = state.add_arm(r, prior)
        update(state, np.array([r]), np.array([k]), np.array([float(n)]), np.array([float(round(n * rate))]),
               np.zeros(1))
    state.retire_arm(r, 0) if len(arms) > 1 else None
    slots, prop = select(state, np.zeros(16, np.int64), seed)
    assert np.all(state.active[0, slots])
    k_act = int(state.active[0, : len(arms)].sum())
    assert np.all(prop > 0.0) and np.all(prop <= 1.0 + 1e-12)
    assert np.all(prop >= min(floor, 1.0 / k_act) - 1e-12)
    shares = [a["serving_share"] for a in state.experiment_summary(0, seed=seed)["arms"]]
    assert sum(shares) == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(arms=stats, alpha=st.floats(0.0, 1.0), t_extra=st.integers(0, 10_000))
def test_n_aux_zero_index_equals_ucb_index(arms, alpha, t_extra):
    scores = []
    for policy in ("llm2ucb", "ucb"):
        state = BanditState(1, 1)
        r = state.add_experiment(ExperimentParams(policy=policy, alpha=alpha, n_aux=0.0))
        for n, rate, prior in arms:
            k = state.add_arm(r, prior)
            update(state, np.array([r]), np.array([k]), np.array([float(n)]), np.array([float(round(n * rate))]),
                   np.zeros(1))
        scores.append([a["score"] for a in state.experiment_summary(0)["arms"]])
    assert scores[0] == scores[1]


def test_bai_recommendation_is_the_best_mean_with_ties():
    from lola.kernels import core, policies

    state = BanditState(capacity_experiments=2, capacity_arms=3)
    row = state.add_experiment(ExperimentParams(policy="llm_bai", n_aux=50.0))
    for prior in (0.02, 0.01, 0.02):
        state.add_arm(row, prior_ctr=prior)
    state.impressions[row, :3] = 100.0
    state.clicks[row, :3] = (3.0, 9.0, 3.0)
    f = state.exp_f[row]
    means = [policies.bai_interval(f[core.F_N_AUX], 100.0, c, p, True, 3, f[core.F_BAI_DELTA], False)[0]
             for c, p in ((3.0, 0.02), (9.0, 0.01), (3.0, 0.02))]
    assert state.bai_recommendation(row) == [1] and means[1] == max(means)
    state.clicks[row, 1] = 2.0
    assert state.bai_recommendation(row) == [0, 2]  # exact tie: both returned
    state.candidate[row, 0] = False
    assert state.bai_recommendation(row) == [2]
    other = state.add_experiment(ExperimentParams(policy="ucb"))
    with pytest.raises(ConfigError):
        state.bai_recommendation(other)


def test_kernel_policy_codes_are_the_params_codes():
    from lola.kernels import core
    from lola.kernels.params import POLICY_CODE

    assert {name: getattr(core, "P_" + name.upper()) for name in POLICIES} == POLICY_CODE
