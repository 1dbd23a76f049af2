"""Smoke test of ``lola bench kernels``: it runs at tiny sizes and prints the documented JSON.

Shape only, never speed: performance is proven by running the benchmark, not by tests.
"""

from __future__ import annotations

import json
import subprocess
import sys


def _lola(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lola.cli", *args], capture_output=True, text=True, timeout=600)


def test_quick_kernels_bench_prints_the_documented_json():
    out = _lola("bench", "kernels", "--json", "--quick", "--experiments", "300", "--decisions", "3000",
                "--mabwiser-experiments", "2")
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    for key in ("cpu", "cores", "python", "numba", "numpy", "mabwiser", "loadavg_start"):
        assert key in doc["machine"]
    results = doc["results"]
    assert {(r["policy"], r["arms"]) for r in results} == {(p, k) for p in ("llm2ucb", "ts", "linucb") for k in (4, 8)}
    for r in results:
        for key in ("numba_per_s", "numba_cpu_per_s", "numba_batch_api_per_s", "worker_batch_per_s", "numpy_per_s",
                    "mabwiser_per_s"):
            assert isinstance(r[key], int) and r[key] > 0, (r["policy"], key)
        assert r["numba_vs_numpy"] > 0 and r["numba_vs_mabwiser"] > 0
        assert r["decisions"] == 3000 and r["experiments"] == 300
        assert 0.0 < r["mean_reward_numba"] < 0.2  # clicks really drawn from the 1-8% CTRs
    assert next(r for r in results if r["policy"] == "linucb")["feature_dim"] == 32
    for r in results:
        if r["policy"] == "ts":  # quadrature vs the replaced Monte Carlo propensity, timed on the same states
            prop = r["propensity"]
            assert prop["quadrature_error_bound"] == 1e-6 and prop["quadrature_us"] > 0 and prop["monte_carlo_us"] > 0
            assert 0.0 < prop["monte_carlo_mean_abs_error"] < 0.2
    ctx = doc["contextual"]
    assert ctx["workload"]["d"] == 32 and ctx["workload"]["arms"] == 4
    for name in ("linucb", "falcon"):
        assert ctx[name]["numba_per_s"] > 0 and ctx[name]["batch_api_per_s"] > 0
        assert 0.0 < ctx[name]["mean_reward"] < 0.2 and ctx[name]["numba_vs_vw"] > 0
    assert ctx["linucb"]["numba_vs_mabwiser"] > 0


def test_bad_bench_argument_is_one_line():
    out = _lola("bench", "kernels", "--policy", "nope")
    assert out.returncode == 2
    assert out.stderr.startswith("lola: error:") and "nope" in out.stderr and out.stderr.count("\n") == 1, out.stderr
