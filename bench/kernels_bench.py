"""``lola bench kernels``: select+update throughput of the Numba kernels vs NumPy and MABWiser.

Workload (per policy and arm count K): ``experiments`` experiments with fixed true CTRs,
``decisions`` decisions in all (``decisions // experiments`` per experiment), Bernoulli
clicks. Each figure is select+update per second, measured in the same run:

* ``numba_per_s``: :func:`lola.kernels.simulate` (the fused engine loop the worker's
  ``select``/``update`` also run), one thread, experiment-major order;
* ``numba_batch_api_per_s``: the worker-facing path, ``select`` then ``update`` on
  batches of one decision per experiment (validation included), so every decision meets
  a new state version. Measured warm: every arm first gets ``API_WARM`` impressions
  (Binomial clicks, one aggregated ``update``), one untimed ``select`` per experiment
  takes TS's reference posterior (a running worker has one), then ``API_STEPS`` timed
  steps. TS (``ts_batch_api``): at the default ``ts_refresh`` a decision needs a new
  allocation quadrature only when an arm's posterior moved past the threshold; the same
  loop at ``ts_refresh = 0`` (one quadrature per decision) and from an empty state (cold:
  early decisions move the posterior most) are reported beside it, each with its
  quadratures per decision;
* ``worker_batch_per_s``: ``PER_VERSION`` decisions per experiment per batch from an
  empty state, first ``WORKER_STEPS`` steps, as the worker answers a batch's requests after
  applying its events;
* ``propensity`` (TS only): microseconds per experiment and state version of the
  quadrature vs the replaced 64-draw Monte Carlo propensity, and the Monte Carlo error;
* ``numpy_per_s``: a vectorised NumPy implementation of the same policy, one step
  over all experiments at a time (the best NumPy layout for this workload);
* ``mabwiser_per_s``: MABWiser (UCB1 / ThompsonSampling / LinUCB), one ``MAB`` per
  experiment, ``predict`` + ``partial_fit`` per decision as a user would write it,
  timed on a subset of experiments and reported per decision.

Wall-clock figures, best of ``repeats`` for the fast paths. The machine's load average
is recorded: figures taken on a shared machine are lower than on a quiet one.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from typing import Any

import typer

D_LINUCB = 32
#: Timed steps (one decision per experiment each) of ``numba_batch_api_per_s``.
API_STEPS = 20
#: Impressions per arm before the timed steps of ``numba_batch_api_per_s`` (an experiment mid-run).
API_WARM = 100
#: Steps of ``worker_batch_per_s`` (from an empty state).
WORKER_STEPS = 2
#: Decisions per experiment and state version in the ``worker_batch_per_s`` figure.
PER_VERSION = 16
#: Posterior draws of the Monte Carlo propensity the quadrature replaced (#20).
MC_DRAWS = 64


def _machine() -> dict[str, Any]:
    import numba
    import numpy as np

    try:
        from importlib.metadata import version

        mab_version = version("mabwiser")
    except Exception:  # noqa: BLE001 - optional peer
        mab_version = None
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "mabwiser": mab_version,
        "numba_threads": numba.get_num_threads(),
        "kernel_threads_used": 1,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


# ---------------------------------------------------------------------------- workload


def _workload(n_exp: int, k: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    ctr = rng.uniform(0.01, 0.08, size=(n_exp, k))
    prior = np.clip(ctr + rng.normal(0.0, 0.01, size=ctr.shape), 0.001, 0.5)
    feats = rng.normal(size=(n_exp, k, D_LINUCB)) / math.sqrt(D_LINUCB)
    return ctr, prior, feats


def _params(policy: str, ts_refresh: float | None = None):
    from lola.kernels import ExperimentParams

    ts = ExperimentParams(policy="ts") if ts_refresh is None else ExperimentParams(policy="ts", ts_refresh=ts_refresh)
    return {
        "llm2ucb": ExperimentParams(policy="llm2ucb", alpha=0.08, n_aux=1000.0),
        "ts": ts,
        "linucb": ExperimentParams(policy="linucb", linucb_alpha=1.0, ridge=1.0),
    }[policy]


def _fresh_state(policy: str, ctr, prior, feats, ts_refresh: float | None = None):
    from lola.kernels import BanditState

    n_exp, k = ctr.shape
    d = D_LINUCB if policy == "linucb" else 0
    state = BanditState(capacity_experiments=n_exp, capacity_arms=k, feature_dim=d)
    state.add_experiments(_params(policy, ts_refresh), prior, feats if d else None)
    return state


def _time_numba(policy, ctr, prior, feats, steps, repeats, seed):
    import numpy as np

    from lola.kernels import simulate

    n_exp = ctr.shape[0]
    rows = np.arange(n_exp, dtype=np.int64)
    warm = _fresh_state(policy, ctr[:8], prior[:8], feats[:8])
    simulate(warm, rows[:8], 3, ctr[:8], seed)  # JIT (or cache load) outside the timing
    best = best_cpu = math.inf
    clicks = 0.0
    for rep in range(repeats):
        state = _fresh_state(policy, ctr, prior, feats)
        t0, c0 = time.perf_counter(), time.process_time()
        clicks, _ = simulate(state, rows, steps, ctr, seed + rep)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
        del state
    n = n_exp * steps
    return n / best, n / max(best_cpu, 1e-9), clicks / n


def _time_batch_api(policy, ctr, prior, feats, seed, per_version=1, steps=API_STEPS, warm_impressions=API_WARM,
                    ts_refresh=None):
    """Worker path: ``select`` then ``update`` for ``steps`` steps, on batches of ``per_version``
    decisions per experiment (one state version each: the worker applies a batch's events, then
    answers its requests with one ``select``); validation included. With ``warm_impressions``
    every arm first gets that many impressions and one untimed ``select`` per experiment runs
    (TS takes its reference posterior). Returns (decisions per second, TS quadratures per decision, decisions per CPU second)."""
    import numpy as np

    from lola.kernels import select, update

    n_exp, k = ctr.shape
    rows = np.repeat(np.arange(n_exp, dtype=np.int64), per_version)
    n = rows.shape[0]
    rng = np.random.default_rng(seed)
    state = _fresh_state(policy, ctr, prior, feats, ts_refresh)
    ones, zeros = np.ones(n), np.zeros(n)
    jit = _fresh_state(policy, ctr[:4], prior[:4], feats[:4], ts_refresh)
    s, _ = select(jit, rows[:4], 0)
    update(jit, rows[:4], s, ones[:4], zeros[:4], zeros[:4])
    if warm_impressions:
        w_rows = np.repeat(np.arange(n_exp, dtype=np.int64), k)
        w_slots = np.tile(np.arange(k, dtype=np.int64), n_exp)
        w_imp = np.full(n_exp * k, float(warm_impressions))
        w_clk = rng.binomial(warm_impressions, ctr.reshape(-1)).astype(np.float64)
        update(state, w_rows, w_slots, w_imp, w_clk, np.zeros(n_exp * k))
        select(state, rows[::per_version], seed + 10_000)
    q0 = state.ts_quadratures
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(steps):
        slots, _prop = select(state, rows, seed + step)
        clicks = (rng.random(n) < ctr[rows, slots]).astype(np.float64)
        update(state, rows, slots, ones, clicks, zeros)
    rate = n * steps / (time.perf_counter() - t0)
    cpu_rate = n * steps / max(time.process_time() - c0, 1e-9)
    return rate, (state.ts_quadratures - q0) / (n * steps), cpu_rate


def _ts_batch_api(ctr, prior, feats, seed):
    """TS's one-decision-per-version figures: default ts_refresh warm, ts_refresh 0 warm, default cold
    (``*_cpu_per_s``: the same decisions per CPU second of this process, less sensitive to a shared machine)."""
    from lola.kernels.params import SETTINGS

    default = SETTINGS["ts_refresh"].default
    out = {"ts_refresh": default, "warm_impressions_per_arm": API_WARM, "steps": API_STEPS}
    for name, kw in (("default", {}), ("ts_refresh_0", {"ts_refresh": 0.0}), ("cold", {"warm_impressions": 0})):
        rate, quad, cpu_rate = _time_batch_api("ts", ctr, prior, feats, seed, **kw)
        out[f"{name}_per_s"] = round(rate)
        out[f"{name}_cpu_per_s"] = round(cpu_rate)
        out[f"{name}_quadratures_per_decision"] = round(quad, 4)
    return out


def _mc_propensity_kernel():
    import numba
    import numpy as np

    from lola.kernels.core import tied_argmax
    from lola.kernels.policies import ts_theta
    from lola.kernels.rng import decision_keys

    @numba.njit(cache=False)
    def mc(a_imp, a_clk, keys, draws, out):
        # the pre-#20 path: P(arm wins) from `draws` extra posterior draws per experiment
        n, K = a_imp.shape
        scores = np.empty(K)
        for i in range(n):
            j = 2
            for k in range(K):
                out[i, k] = 0.0
            for m in range(draws):
                for k in range(K):
                    scores[k], j = ts_theta(a_imp[i, k], a_clk[i, k], 0.0, False, True, 0.0, 1.0, 1.0, keys[i], j)
                w, _, _ = tied_argmax(K, scores, 0.0)
                out[i, w] += 1.0 / draws

    return mc, decision_keys


def _propensity_comparison(ctr, prior, feats, seed, n_exp=2000):
    """Quadrature vs the replaced Monte Carlo path on the same TS states (after 50
    impressions per arm): time per experiment and state version, and the error of each
    against the quadrature (whose own bound is TS_ALLOCATION_ERROR)."""
    import numpy as np

    from lola.kernels.allocation import TS_ALLOCATION_ERROR

    m = min(n_exp, ctr.shape[0])
    ctr, prior = ctr[:m], prior[:m]
    state = _fresh_state("ts", ctr, prior, feats[:m])
    rng = np.random.default_rng(seed)
    k = ctr.shape[1]
    state.impressions[:m, :k] = 50.0
    state.clicks[:m, :k] = rng.binomial(50, ctr).astype(np.float64)
    rows = np.arange(m, dtype=np.int64)
    state.allocations(rows[:2])  # compile outside the timing (every row's cached allocation is stale)
    state.stamp[rows] += 1
    t0 = time.perf_counter()
    quad = state.allocations(rows)[:m, :k].copy()
    t_quad = (time.perf_counter() - t0) / m
    mc, keys_of = _mc_propensity_kernel()
    out = np.empty((m, k))
    imp, clk = np.ascontiguousarray(state.impressions[:m, :k]), np.ascontiguousarray(state.clicks[:m, :k])
    mc(imp[:2], clk[:2], keys_of(np.uint64(seed), 2), MC_DRAWS, out[:2])
    t0 = time.perf_counter()
    mc(imp, clk, keys_of(np.uint64(seed), m), MC_DRAWS, out)
    t_mc = (time.perf_counter() - t0) / m
    return {"experiments": m, "arms": k, "quadrature_us": round(t_quad * 1e6, 2),
            "monte_carlo_us": round(t_mc * 1e6, 2), "monte_carlo_draws": MC_DRAWS,
            "quadrature_error_bound": TS_ALLOCATION_ERROR,
            "monte_carlo_mean_abs_error": round(float(np.abs(out - quad).mean()), 4),
            "monte_carlo_max_abs_error": round(float(np.abs(out - quad).max()), 4)}


# ---------------------------------------------------------------------------- NumPy peer


def _numpy_run(policy, ctr, prior, feats, steps, seed):
    """Vectorised NumPy version of the same policy: one step over all experiments at a time."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n_exp, k = ctr.shape
    idx = np.arange(n_exp)
    imp = np.zeros((n_exp, k))
    clk = np.zeros((n_exp, k))
    flat_imp, flat_clk = imp.reshape(-1), clk.reshape(-1)
    total = 0.0
    if policy == "linucb":
        d = feats.shape[2]
        ainv = np.broadcast_to(np.eye(d), (n_exp, d, d)).copy()
        bvec = np.zeros((n_exp, d))
        z = feats.copy()  # A^-1 x_k with A = I
        chunk = 8192
    t0 = time.perf_counter()
    for step in range(steps):
        if policy == "llm2ucb":
            alpha, n_aux = 0.08, 1000.0
            a = alpha * math.sqrt(math.log(1.0 + step))
            n = 1.0 + imp
            u1 = clk / n + a / np.sqrt(n)
            n2 = n + n_aux
            u2 = (clk + prior * n_aux) / n2 + a / np.sqrt(n2)
            scores = np.minimum(u1, u2)
        elif policy == "ts":
            scores = rng.beta(1.0 + clk, 1.0 + imp - clk)
        else:
            scores = np.einsum("ekd,ed->ek", z, bvec) + np.sqrt(np.maximum(np.einsum("ekd,ekd->ek", feats, z), 0.0))
        # uniform tie-break among exact maxima, as the kernels do
        tied = scores == scores.max(axis=1, keepdims=True)
        choice = np.argmax(tied * rng.random((n_exp, k)), axis=1)
        click = (rng.random(n_exp) < ctr[idx, choice]).astype(np.float64)
        flat = idx * k + choice
        flat_imp[flat] += 1.0
        flat_clk[flat] += click
        total += click.sum()
        if policy == "linucb":
            x = feats[idx, choice]  # [E, d]
            bvec += click[:, None] * x
            for s in range(0, n_exp, chunk):
                sl = slice(s, s + chunk)
                u = z[sl][np.arange(min(chunk, n_exp - s)), choice[sl]]  # A^-1 x_a
                coef = 1.0 / (1.0 + np.einsum("ed,ed->e", x[sl], u))
                ainv[sl] -= coef[:, None, None] * u[:, :, None] * u[:, None, :]
                ux = np.einsum("ed,ekd->ek", u, feats[sl])
                z[sl] -= (coef[:, None] * ux)[:, :, None] * u[:, None, :]
    dt = time.perf_counter() - t0
    return n_exp * steps / dt, total / (n_exp * steps)


# ---------------------------------------------------------------------------- MABWiser peer


def _mabwiser_run(policy, ctr, feats, steps, seed):
    import numpy as np
    from mabwiser.mab import MAB, LearningPolicy

    rng = np.random.default_rng(seed)
    n_exp, k = ctr.shape
    arms = list(range(k))
    decisions = 0
    t0 = time.perf_counter()
    for e in range(n_exp):
        if policy == "llm2ucb":
            lp = LearningPolicy.UCB1(alpha=0.08)
        elif policy == "ts":
            lp = LearningPolicy.ThompsonSampling()
        else:
            lp = LearningPolicy.LinUCB(alpha=1.0, l2_lambda=1.0)
        mab = MAB(arms=arms, learning_policy=lp, seed=int(seed + e))
        if policy == "linucb":
            # MABWiser's LinUCB is disjoint per arm with a per-decision context; the
            # closest equivalent of our per-arm text embeddings is a d=32 context.
            ctx = feats[e, 0][None, :]
            mab.fit(decisions=[], rewards=[], contexts=np.empty((0, ctx.shape[1])))
            for _ in range(steps):
                arm = mab.predict(ctx)
                r = float(rng.random() < ctr[e, arm])
                mab.partial_fit([arm], [r], ctx)
                decisions += 1
        else:
            mab.fit(decisions=[], rewards=[])
            for _ in range(steps):
                arm = mab.predict()
                r = float(rng.random() < ctr[e, arm])
                mab.partial_fit([arm], [r])
                decisions += 1
    return decisions / (time.perf_counter() - t0), decisions


# ---------------------------------------------------------------------------- driver


def run_benchmark(experiments: int = 100_000, decisions: int = 2_000_000, arms: tuple[int, ...] = (4, 8),
                  policies: tuple[str, ...] = ("llm2ucb", "ts", "linucb"), mabwiser_experiments: int = 100,
                  repeats: int = 3, seed: int = 0, linucb_experiments: int | None = None,
                  contextual: dict[str, int] | None = None) -> dict[str, Any]:
    """Run the benchmark and return the JSON-ready dict (``contextual``: sizes of its section, None = skip)."""
    from lola.bench import contextual_bench

    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(1)  # one thread for the NumPy peer too
    except Exception:  # noqa: BLE001 - optional
        limiter = None
    steps = max(decisions // experiments, 1)
    machine = _machine()
    results = []
    for policy in policies:
        n_exp = experiments if policy != "linucb" or linucb_experiments is None else linucb_experiments
        for k in arms:
            ctr, prior, feats = _workload(n_exp, k, seed)
            numba_rate, numba_cpu_rate, numba_ctr = _time_numba(policy, ctr, prior, feats, steps, repeats, seed)
            ts_api = _ts_batch_api(ctr, prior, feats, seed) if policy == "ts" else None
            api_rate = ts_api["default_per_s"] if ts_api else _time_batch_api(policy, ctr, prior, feats, seed)[0]
            worker_rate, _, _ = _time_batch_api(policy, ctr, prior, feats, seed, PER_VERSION, WORKER_STEPS, 0)
            numpy_rate, numpy_ctr = _numpy_run(policy, ctr, prior, feats, steps, seed)
            m = min(mabwiser_experiments, n_exp)
            mab_rate, mab_n = _mabwiser_run(policy, ctr[:m], feats[:m], steps, seed)
            results.append({
                "policy": policy,
                "arms": k,
                "experiments": n_exp,
                "decisions": n_exp * steps,
                "feature_dim": D_LINUCB if policy == "linucb" else 0,
                "numba_per_s": round(numba_rate),
                "numba_cpu_per_s": round(numba_cpu_rate),
                "numba_batch_api_per_s": round(api_rate),
                "worker_batch_per_s": round(worker_rate),
                "numpy_per_s": round(numpy_rate),
                "mabwiser_per_s": round(mab_rate),
                "mabwiser_decisions_timed": mab_n,
                "numba_vs_numpy": round(numba_rate / numpy_rate, 2),
                "numba_vs_mabwiser": round(numba_rate / mab_rate, 1),
                "mabwiser_peer": {"llm2ucb": "UCB1", "ts": "ThompsonSampling", "linucb": "LinUCB"}[policy],
                "mean_reward_numba": round(numba_ctr, 5),
                "mean_reward_numpy": round(numpy_ctr, 5),
            })
            if policy == "ts":
                results[-1]["ts_batch_api"] = ts_api
                results[-1]["propensity"] = _propensity_comparison(ctr, prior, feats, seed)
            del ctr, prior, feats
    ctx = contextual_bench.run(seed=seed, repeats=repeats, **contextual) if contextual is not None else None
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    if limiter is not None:
        limiter.restore_original_limits()
    return {
        "machine": machine,
        "workload": {"experiments": experiments, "decisions": experiments * steps, "steps_per_experiment": steps,
                     "order": "numba_per_s: blocks of 32 experiments interleaved step by step, each decision "
                              "followed by its update; "
                              "step-major batches for numba_batch_api_per_s and numpy",
                     "timing": f"wall clock, best of {repeats} for numba_per_s, single run otherwise; "
                               "numba_cpu_per_s uses this process's CPU time (less sensitive to a loaded machine)",
                     "batch_api": f"warm state ({API_WARM} impressions per arm, Binomial clicks; one untimed "
                                  f"select per experiment), then {API_STEPS} timed steps: select+update on "
                                  "batches of one decision per experiment (every decision sees a new state "
                                  "version), validation included; TS at its default ts_refresh "
                                  "(ts_batch_api: also ts_refresh 0 and from an empty state, with quadratures "
                                  "per decision)",
                     "worker_batch": f"first {WORKER_STEPS} steps from an empty state: select+update on batches "
                                     f"of {PER_VERSION} decisions per experiment (one state version each), "
                                     "validation included",
                     "propensities": "every select returns them: 1/#tied (with floor) for index policies; TS: "
                                     "the allocation of the reference posterior the decision drew from, by "
                                     "quadrature once per experiment and reference, absolute error <= 1e-6 "
                                     "(kernels/allocation.py); the reference's delay (ts_refresh) is a policy "
                                     "property, not an error; off in simulate (numba_per_s)"},
        "results": results,
        "contextual": ctx,
    }


def register(app: typer.Typer) -> None:
    """Add ``lola bench kernels``."""

    @app.command("kernels")
    def kernels_cmd(
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
        quick: bool = typer.Option(False, "--quick", help="Small sizes (seconds), for smoke tests."),
        experiments: int | None = typer.Option(None, help="Number of experiments [100000; --quick 2000]."),
        decisions: int | None = typer.Option(None, help="Total decisions, split evenly [2000000; --quick 40000]."),
        mabwiser_experiments: int | None = typer.Option(None, help="Experiments timed with MABWiser [100; --quick 10]."),
        policy: list[str] = typer.Option(["llm2ucb", "ts", "linucb"], help="Policies to run."),
        arms: list[int] = typer.Option([4, 8], help="Arm counts K."),
        repeats: int | None = typer.Option(None, help="Repeats of the Numba run, best kept [3; --quick 1]."),
        seed: int = typer.Option(0, help="Workload and randomness seed."),
        contextual: bool = typer.Option(True, help="Also time contextual LinUCB/FALCON (d = 32) against Vowpal "
                                                   "Wabbit SquareCB and MABWiser LinUCB (docs/contextual.md)."),
    ) -> None:
        """Select+update throughput: Numba kernels vs vectorised NumPy vs MABWiser (JSON)."""
        from lola.errors import ConfigError

        defaults = (2_000, 40_000, 10, 1) if quick else (100_000, 2_000_000, 100, 3)
        experiments, decisions, mabwiser_experiments, repeats = (
            d if v is None else v for v, d in zip((experiments, decisions, mabwiser_experiments, repeats), defaults))
        bad = [p for p in policy if p not in ("llm2ucb", "ts", "linucb")]
        if bad:
            raise ConfigError(f"--policy must be llm2ucb, ts or linucb; got {', '.join(bad)}")
        if experiments < 1 or decisions < experiments:
            raise ConfigError("--experiments must be >= 1 and --decisions >= --experiments")
        if any(k < 1 for k in arms) or repeats < 1 or mabwiser_experiments < 1:
            raise ConfigError("--arms, --repeats and --mabwiser-experiments must be >= 1")
        ctx_sizes = (dict(decisions=20_000, experiments=100, peer_decisions=200) if quick else
                     dict(decisions=1_000_000, experiments=1_000, peer_decisions=5_000)) if contextual else None
        out = run_benchmark(experiments, decisions, tuple(arms), tuple(policy), mabwiser_experiments, repeats, seed,
                            contextual=ctx_sizes)
        if json_out:
            typer.echo(json.dumps(out, indent=2))
        else:
            for r in out["results"]:
                typer.echo(f"{r['policy']:8s} K={r['arms']}: numba {r['numba_per_s'] / 1e6:7.2f} M/s  "
                           f"api {r['numba_batch_api_per_s'] / 1e6:6.2f} M/s  numpy {r['numpy_per_s'] / 1e6:6.2f} M/s  "
                           f"mabwiser {r['mabwiser_per_s'] / 1e3:6.2f} k/s  "
                           f"x{r['numba_vs_numpy']} numpy, x{r['numba_vs_mabwiser']} mabwiser")
            for name in ("linucb", "falcon") if out["contextual"] else ():
                r = out["contextual"][name]
                typer.echo(f"ctx_{name:6s} d=32 K=4: numba {r['numba_per_s'] / 1e6:5.2f} M/s "
                           f"(cpu {r['numba_cpu_per_s'] / 1e6:5.2f} M/s)  x{r.get('numba_vs_vw')} vw squarecb")
