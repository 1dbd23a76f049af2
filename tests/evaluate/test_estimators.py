"""Off-policy estimators (evaluate/estimators.py): a NumPy twin, Open Bandit Pipeline itself, the bootstrap."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lola.errors import LolaError
from lola.evaluate.estimators import ESTIMATORS, Feedback, estimate, evaluate
from lola.evaluate.policies import matrix, policy_table, reward_model
from lola.stream.decision_log import read_obd

ROOT = Path(__file__).resolve().parents[2]
OBD = ROOT.parent / "shared" / "data" / "obd"
OBP_PYTHON = Path(os.environ.get("LOLA_OBP_PYTHON", ROOT / ".venv-obp" / "bin" / "python"))


def synthetic(seed: int, n: int = 3000, k: int = 5) -> Feedback:
    """A softmax logging policy, a different softmax target policy, a noisy reward model."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k))
    mu = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    action = np.array([rng.choice(k, p=p) for p in mu])
    ctr = rng.uniform(0.01, 0.2, k)
    reward = (rng.random(n) < ctr[action]).astype(float)
    pi = np.exp(-logits) / np.exp(-logits).sum(1, keepdims=True)
    q = np.clip(ctr + rng.normal(0, 0.02, (n, k)), 0, 1)
    return Feedback(action, reward, mu[np.arange(n), action], pi, q)


def twin(fb: Feedback, tau: float) -> dict[str, float]:
    """The textbook formulas, one round at a time (no shared code)."""
    ips, snips_num, snips_den, dr, sw = [], [], [], [], []
    for i in range(fb.action.shape[0]):
        a, r, p = fb.action[i], fb.reward[i], fb.pscore[i]
        w = fb.pi[i, a] / p
        dm = sum(fb.pi[i, k] * fb.q[i, k] for k in range(fb.pi.shape[1]))
        ips.append(w * r)
        snips_num.append(w * r)
        snips_den.append(w)
        dr.append(dm + w * (r - fb.q[i, a]))
        sw.append(dm + (w * (r - fb.q[i, a]) if w <= tau else 0.0))
    return {"ips": np.mean(ips), "snips": sum(snips_num) / sum(snips_den), "dr": np.mean(dr), "switch_dr": np.mean(sw)}


def obd_feedback(campaign: str) -> Feedback:
    log = read_obd(OBD / campaign / "all")
    k = len(log.variants["obd"])
    pi = matrix(log, policy_table(log, "uniform", None))
    pi[:, : k // 2] *= 1.5  # a non-uniform target: half the items 1.5x as likely
    pi /= pi.sum(1, keepdims=True)
    return Feedback(log.action, log.reward, log.pscore, pi, reward_model(log, None, obd=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimators_match_the_numpy_twin(seed):
    fb = synthetic(seed, n=800)
    got = evaluate(fb, bootstrap=0, tau=3.0)
    ref = twin(fb, tau=3.0)
    for name in ESTIMATORS:
        assert got[name]["value"] == pytest.approx(ref[name], abs=1e-12), name


@pytest.mark.slow
@pytest.mark.skipif(not OBP_PYTHON.is_file(), reason=f"Open Bandit Pipeline environment not found at {OBP_PYTHON} "
                                                       "(create it with `make obp-env`)")
@pytest.mark.parametrize("case", ["synthetic", "obd-random", "obd-bts"])
def test_estimators_agree_with_open_bandit_pipeline(case, tmp_path):
    if case.startswith("obd") and not OBD.is_dir():
        pytest.skip(f"{OBD} not found")
    fb = synthetic(7) if case == "synthetic" else obd_feedback(case[4:])
    tau = 5.0
    np.savez(tmp_path / "in.npz", action=fb.action, reward=fb.reward, pscore=fb.pscore, pi=fb.pi, q=fb.q)
    subprocess.run([str(OBP_PYTHON), str(Path(__file__).with_name("obp_reference.py")), str(tmp_path / "in.npz"),
                    str(tmp_path / "out.json"), str(tau)], check=True, timeout=300, capture_output=True)
    ref = json.loads((tmp_path / "out.json").read_text())
    got = evaluate(fb, bootstrap=0, tau=tau)
    for name in ESTIMATORS:
        assert abs(got[name]["value"] - ref[name]) <= 1e-9, (name, got[name]["value"], ref[name])


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate():
    fb = synthetic(3)
    a = evaluate(fb, bootstrap=300, seed=5)
    assert a == evaluate(fb, bootstrap=300, seed=5)
    for name in ESTIMATORS:
        lo, hi = a[name]["ci"]
        assert lo < a[name]["value"] < hi
    assert estimate(fb, "snips", 0, np.random.default_rng(0))["ci"] is None


def test_percentile_interval_is_seeded_too_and_an_unknown_interval_is_refused():
    fb = synthetic(3)
    a = evaluate(fb, bootstrap=300, seed=5, interval="percentile")
    assert a == evaluate(fb, bootstrap=300, seed=5, interval="percentile")
    assert a["dr"]["value"] == evaluate(fb, bootstrap=300, seed=5)["dr"]["value"]
    with pytest.raises(LolaError, match="interval"):
        estimate(fb, "ips", 10, np.random.default_rng(0), interval="bca")


def _mean_feedback(x: np.ndarray) -> Feedback:
    """A log whose IPS estimate is mean(x): one action, propensity 1, reward x."""
    n = x.shape[0]
    return Feedback(np.zeros(n, dtype=np.int64), x, np.ones(n), np.ones((n, 1)))


def test_studentized_interval_is_the_t_interval_for_a_symmetric_mean_and_leans_right_for_a_skewed_one():
    rng = np.random.default_rng(11)
    # symmetric terms: close to mean +- 1.96 se (se by the delta method = sd / sqrt(n))
    x = rng.normal(0.0, 1.0, 4000)
    est = estimate(_mean_feedback(x), "ips", 2000, np.random.default_rng(1))
    se = x.std(ddof=1) / np.sqrt(x.shape[0])
    lo, hi = est["ci"]
    assert lo == pytest.approx(x.mean() - 1.96 * se, abs=0.15 * se)
    assert hi == pytest.approx(x.mean() + 1.96 * se, abs=0.15 * se)
    # rare large terms (an importance weight of 20 on a 2 % event): the interval reaches further up than down,
    # and further up than the percentile interval does (which leans the way of the bootstrap distribution)
    y = 20.0 * (rng.random(400) < 0.02)
    fb = _mean_feedback(y)
    stud = estimate(fb, "ips", 4000, np.random.default_rng(2))["ci"]
    perc = estimate(fb, "ips", 4000, np.random.default_rng(2), interval="percentile")["ci"]
    assert stud[1] - y.mean() > 1.2 * (y.mean() - stud[0])
    assert stud[1] > perc[1]


def test_an_interval_without_spread_has_zero_width():
    fb = _mean_feedback(np.full(50, 0.25))
    for interval in ("studentized", "percentile"):
        assert estimate(fb, "ips", 100, np.random.default_rng(0), interval=interval)["ci"] == [0.25, 0.25]


def test_a_zero_propensity_or_bad_shape_is_refused():
    fb = synthetic(0, n=10)
    with pytest.raises(LolaError, match="propensity"):
        Feedback(fb.action, fb.reward, np.zeros(10), fb.pi)
    with pytest.raises(LolaError, match="shape"):
        Feedback(fb.action, fb.reward[:5], fb.pscore, fb.pi)
