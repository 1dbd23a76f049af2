"""``lola replay``: the LOLA paper replay (Table 8, Figure 7; appendix G.1-G.3).

    lola replay --data CSV (--priors CSV | --model DIR) [--tune-data CSV]
                [--taus 50,100,...] [--reps R] [--json] [--plot out.png]
    lola replay bai --data CSV (--priors CSV | --model DIR) ...     # appendix G.1
    lola replay baseline-prior --data CSV --out runs/priors.csv     # TF-IDF ridge, train split only
    lola replay synthetic-prior --data CSV --out CSV                # exact / rank-reversed, per test
    lola replay ideal-observer --data CSV                           # can a test's clicks judge its prior?
    lola replay edge --data CSV (--priors CSV | --model DIR) --refresh 1,10,100,1000   # edge serving's loss

Heavy imports (numba, scipy, sklearn, matplotlib) stay inside the command bodies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from lola.errors import ConfigError
from lola.replay.report import json_safe

replay_app = typer.Typer(
    help="Reproduce LOLA's Table 8 / Figure 7 on Upworthy headline tests with the worker's own kernels.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def _progress_factory(enabled: bool):
    """A rich progress bar on stderr; returns (factory, stop)."""
    if not enabled:
        return None, lambda: None
    import sys

    if not sys.stderr.isatty():
        # Logs and CI: a plain line every 5%, not a redrawn bar.
        import time

        state = {"done": 0, "total": 1, "shown": -1, "t0": time.perf_counter()}

        def plain_factory(total: int):
            state["total"] = max(total, 1)

            def advance(n: int = 1) -> None:
                state["done"] += n
                pct = int(100 * state["done"] / state["total"])
                if pct // 5 != state["shown"] // 5:
                    state["shown"] = pct
                    elapsed = time.perf_counter() - state["t0"]
                    print(f"replay: {state['done']}/{state['total']} ({pct}%) {elapsed:.0f} s", file=sys.stderr, flush=True)

            return advance

        return plain_factory, lambda: None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    holder = {}

    def factory(total: int):
        progress.start()
        task = progress.add_task("replay", total=total)
        holder["task"] = task
        return lambda n=1: progress.advance(task, n)

    return factory, progress.stop


def _write_json(out: Optional[Path], doc: dict) -> None:
    """``--out``: also write the command's JSON result there (folders created)."""
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1))


def _require_file(path: Optional[Path], flag: str) -> None:
    """One-line error for a named input file that is not there (``None`` means not given)."""
    if path is not None and not path.is_file():
        raise ConfigError(f"{flag} file not found: {path}")


def _check_inputs(data: Path, priors: Optional[Path], model: Optional[Path], tune_data: Optional[Path], reps: int) -> None:
    if (priors is None) == (model is None):
        raise ConfigError("give exactly one of --priors CSV or --model DIR")
    _require_file(data, "--data")
    _require_file(tune_data, "--tune-data")
    _require_file(priors, "--priors")
    if model is not None and not model.is_dir():
        raise ConfigError(f"--model directory not found: {model}")
    if reps < 1:
        raise ConfigError(f"--reps must be >= 1, got {reps}")


@replay_app.callback()
def replay(
    ctx: typer.Context,
    data: Optional[Path] = typer.Option(None, "--data", help="Upworthy package CSV (archive columns)."),
    priors: Optional[Path] = typer.Option(None, "--priors", help="CSV headline,prior_ctr (from `lola priors score`)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Exported ONNX prior model directory."),
    tune_data: Optional[Path] = typer.Option(
        None, "--tune-data", help="Tune on this file's tests and report on ALL tests of --data (hold-out evaluation)."
    ),
    taus: str = typer.Option("50,100,200,400,600,800,1000", "--taus", help="Impressions per headline; T = tau * K."),
    reps: int = typer.Option(10, "--reps", help="Simulation repetitions per test on the report tests."),
    tune_reps: int = typer.Option(3, "--tune-reps", help="Repetitions per grid point on the tune tests."),
    policies: Optional[str] = typer.Option(None, "--policies", help="Comma-separated subset (default: all)."),
    seed: int = typer.Option(20240501, "--seed", help="Master seed (common random numbers across policies)."),
    workers: int = typer.Option(0, "--workers", help="Threads across tests (0 = min(2, cores))."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON result on stdout."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the Figure 7-style PNG here."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the JSON result to this file."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
    worker_defaults: Optional[Path] = typer.Option(
        None, "--worker-defaults",
        help="Write LOLA's one setting for every horizon here, as lola/data/worker_defaults.json (the worker's defaults)."),
) -> None:
    """Tune every policy per tau on tune tests, report clicks per test per period on the test tests."""
    if ctx.invoked_subcommand is not None:
        return
    if data is None:
        raise ConfigError("--data is required (an Upworthy package CSV)")
    _check_inputs(data, priors, model, tune_data, reps)
    if tune_reps < 1:
        raise ConfigError(f"--tune-reps must be >= 1, got {tune_reps}")
    from lola.replay import protocol as P

    tau_list = P.parse_taus(taus)
    names = P.parse_policies(policies)
    if workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {workers}")

    from lola.replay import report as R
    from lola.replay import run as run

    nworkers = workers or run.default_workers()
    rd = run.load_replay_data(data, priors, model, tune_data, want_features="LLM-LinUCB" in names)
    factory, stop = _progress_factory(progress)
    try:
        result = run.run_replay(rd, tau_list, names, reps, tune_reps, seed, nworkers, factory)
    finally:
        stop()
    doc = json_safe(result.as_json())
    _write_json(out, doc)
    if worker_defaults is not None:
        from lola.data import worker_defaults as wd

        one = doc.get("one_setting_for_all_horizons")
        if not one:
            raise ConfigError("--worker-defaults needs LOLA among --policies (its one setting for every horizon)")
        wd.write(worker_defaults, one, f"one_setting_for_all_horizons of `lola replay` on {data} "
                                       f"(prior {result.settings['prior_source']}, seed {seed}, taus {taus}, "
                                       f"tune-reps {tune_reps})")
    if plot is not None:
        src = result.settings.get("prior_source", "")
        R.plot_figure7(doc["results"], tau_list, names, plot, title=f"LOLA replay: {result.settings['report_tests']} tests, {reps} reps ({Path(str(src)).name})")
    if as_json:
        typer.echo(json.dumps(doc))
        return
    rows = doc["results"]
    typer.echo(f"# {result.settings['split']}")
    typer.echo(
        f"# model training headlines: {result.settings['model_training_headlines']}; tune tests dropped as seen in"
        f" training {result.settings['tune_tests_dropped_seen_in_training']}, report tests seen in training"
        f" {result.settings['report_tests_seen_in_training']}"
    )
    q = result.settings["prior_quality"]["report"]
    typer.echo(
        f"# report tests {result.settings['report_tests']}, reps {reps}, seed {seed}; prior {result.settings['prior_source']}"
        f" (R2 {q['r2']:.3f}, top-1 {q['top1_accuracy']:.3f}); {result.settings['wall_seconds']} s"
    )
    typer.echo(R.markdown_results(rows, tau_list, names))
    typer.echo("")
    typer.echo(R.markdown_improvements(result.improvements, tau_list))
    one = doc.get("one_setting_for_all_horizons")
    if one:
        params = ", ".join(f"{k}={v:g}" for k, v in one["params"].items())
        typer.echo(f"\n# one {one['policy']} setting for every horizon (a worker's default): {params};"
                   f" on tune it gives up {one['tune_shortfall_pct_mean']:.2f} % on average against per-tau tuning")


@replay_app.command("baseline-prior")
def baseline_prior(
    data: Path = typer.Option(..., "--data", help="Upworthy package CSV; the model is fitted on its train split only."),
    out: Path = typer.Option(Path("runs/priors-tfidf.csv"), "--out", help="Where to write headline,prior_ctr."),
    score: Optional[list[Path]] = typer.Option(None, "--score", help="Extra CSV(s) whose headlines are scored too."),
) -> None:
    """Fit the development baseline prior (TF-IDF ridge on the train split) and score every headline."""
    _require_file(data, "--data")
    from lola.replay.priors import PriorTable, fit_tfidf_ridge, prior_quality, write_priors_csv
    from lola.data.upworthy import headline_tests, load_packages, split_packages

    packages, _ = load_packages(data)
    parts = split_packages(packages)
    predict = fit_tfidf_ridge(parts["train"])
    texts = {p.headline for p in packages}
    for extra in score or []:
        _require_file(extra, "--score")
        texts |= {p.headline for p in load_packages(extra)[0]}
    texts_sorted = sorted(texts)
    preds = predict(texts_sorted)
    write_priors_csv(out, texts_sorted, preds)
    table = PriorTable(dict(zip(texts_sorted, preds.tolist())), source=str(out))
    tune_q = prior_quality(headline_tests(parts["tune"]), table)
    typer.echo(json.dumps({"out": str(out), "headlines": len(texts_sorted), "fitted_on": "train split", "tune_r2": tune_q["r2"], "tune_top1": tune_q["top1_accuracy"]}))


@replay_app.command("synthetic-prior")
def synthetic_prior(
    data: Path = typer.Option(..., "--data", help="Upworthy package CSV."),
    out: Path = typer.Option(Path("runs/priors-synthetic.csv"), "--out", help="Where to write headline,prior_ctr."),
    reversed_fraction: float = typer.Option(0.5, "--reversed-fraction",
                                            help="Share of tests whose prior ranks the headlines in reverse."),
    seed: int = typer.Option(20240501, "--seed", help="Picks which tests are reversed."),
) -> None:
    """A controlled prior: each test's own CTRs (exact), rank-reversed in a seeded share of tests.

    For checking an adaptive policy's premise (prior quality that varies between
    experiments) with `lola replay --priors`; it uses the archive's outcomes, so
    its scores are an upper-bound experiment, never a result for a real prior.
    """
    _require_file(data, "--data")
    if not (0.0 <= reversed_fraction <= 1.0):
        raise ConfigError(f"--reversed-fraction must be in [0, 1], got {reversed_fraction}")
    from lola.replay.priors import synthetic_priors, write_priors_csv
    from lola.data.upworthy import headline_tests, load_packages

    tests = headline_tests(load_packages(data)[0])
    priors = synthetic_priors(tests, reversed_fraction, seed)
    write_priors_csv(out, list(priors), list(priors.values()))
    typer.echo(json.dumps({"out": str(out), "headlines": len(priors), "tests": len(tests),
                           "reversed_fraction": reversed_fraction, "seed": seed}))


@replay_app.command("ideal-observer")
def ideal_observer(
    data: Path = typer.Option(..., "--data", help="Upworthy package CSV."),
    taus: str = typer.Option("50,100,200,400,1000", "--taus", help="Impressions per headline."),
    draws: int = typer.Option(400, "--draws", help="Simulated click counts per test and tau."),
    seed: int = typer.Option(20240501, "--seed"),
) -> None:
    """How often one test's own clicks tell an exact prior from a rank-reversed one (best case for LOLA-EB)."""
    _require_file(data, "--data")
    if draws < 1:
        raise ConfigError(f"--draws must be >= 1, got {draws}")
    from lola.replay.premise import ideal_observer as observe
    from lola.replay.protocol import parse_taus
    from lola.data.upworthy import headline_tests, load_packages

    tests = headline_tests(load_packages(data)[0])
    typer.echo(json.dumps(observe([t.ctrs for t in tests], parse_taus(taus), draws, seed)))


@replay_app.command("bai")
def bai(
    data: Path = typer.Option(..., "--data", help="Upworthy package CSV."),
    priors: Optional[Path] = typer.Option(None, "--priors", help="CSV headline,prior_ctr."),
    model: Optional[Path] = typer.Option(None, "--model", help="Exported ONNX prior model directory."),
    tune_data: Optional[Path] = typer.Option(None, "--tune-data", help="Tune n_aux on this file; report on all of --data."),
    reps: int = typer.Option(5, "--reps"),
    seed: int = typer.Option(20240501, "--seed"),
    workers: int = typer.Option(0, "--workers"),
    as_json: bool = typer.Option(False, "--json"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Figure A13-style PNG: success rate vs pulls per test."),
    radius: str = typer.Option("hoeffding", "--radius", help="Algorithm 2's confidence radius: hoeffding or bernstein."),
) -> None:
    """Appendix G.1: LLM-BAI vs BAI vs fixed-pull A/B tests; success = every returned arm within 0.5% of the best CTR."""
    _check_inputs(data, priors, model, tune_data, reps)
    from lola.kernels.params import BAI_RADII

    if radius not in BAI_RADII:
        raise ConfigError(f"--radius must be one of {', '.join(BAI_RADII)}, got {radius!r}")
    from lola.replay import bai as B
    from lola.replay import run as run

    rd = run.load_replay_data(data, priors, model, tune_data, want_features=False)
    doc = B.run_bai(rd, reps, seed, workers or run.default_workers(), radius)
    if plot is not None:
        B.plot_bai(doc, plot)
    doc = json_safe(doc)
    if as_json:
        typer.echo(json.dumps(doc))
    else:
        typer.echo(B.markdown_bai(doc))


@replay_app.command("edge")
def edge(
    data: Path = typer.Option(..., "--data", help="Upworthy package CSV."),
    priors: Optional[Path] = typer.Option(None, "--priors", help="CSV headline,prior_ctr."),
    model: Optional[Path] = typer.Option(None, "--model", help="Exported ONNX prior model directory."),
    refresh: str = typer.Option("1,10,100,1000", "--refresh", help="Decisions between two snapshots, comma-separated."),
    taus: str = typer.Option("50,1000", "--taus", help="Impressions per headline; T = tau * K."),
    methods: str = typer.Option("hallucinate,matching", "--methods", help="Edge allocation methods to compare."),
    reps: int = typer.Option(10, "--reps"),
    seed: int = typer.Option(20240501, "--seed"),
    as_json: bool = typer.Option(False, "--json"),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the JSON result to this file."),
    save_priors: Optional[Path] = typer.Option(None, "--save-priors", help="Write the report tests' priors as a --priors CSV."),
) -> None:
    """Clicks lost by edge serving (an allocation per snapshot interval) against per-decision LOLA, paired."""
    _check_inputs(data, priors, model, None, reps)
    from lola.kernels.edge import METHODS
    from lola.replay import edge as E
    from lola.replay import protocol as P

    tau_list = P.parse_taus(taus)
    try:
        refreshes = [int(x) for x in refresh.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--refresh must be comma-separated integers, got {refresh!r}") from None
    if not refreshes or min(refreshes) < 1:
        raise ConfigError(f"--refresh values must be integers >= 1, got {refresh!r}")
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in method_list if m not in METHODS]
    if bad or not method_list:
        raise ConfigError(f"--methods must be among {', '.join(METHODS)}, got {methods!r}")
    batch = E.load_report_batch(data, priors, model, save_priors)
    doc = json_safe(E.run_edge(batch, tau_list, refreshes, reps, seed, method_list))
    doc["data"] = str(data)
    doc["prior_source"] = str(priors or model)
    _write_json(out, doc)
    typer.echo(json.dumps(doc) if as_json else E.markdown_edge(doc))


@replay_app.command("ts-refresh")
def ts_refresh(
    data: Path = typer.Option(..., "--data", help="Upworthy package CSV (its tune split is replayed)."),
    thresholds: str = typer.Option("0,0.01,0.05,0.1", "--thresholds", help="ts_refresh values, comma-separated."),
    taus: str = typer.Option("100,1000", "--taus", help="Impressions per headline; T = tau * K."),
    reps: int = typer.Option(10, "--reps"),
    seed: int = typer.Option(20240501, "--seed"),
    as_json: bool = typer.Option(False, "--json"),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the JSON result to this file."),
) -> None:
    """Clicks, regret and quadratures of TS at each refresh threshold, paired against threshold 0 (tune tests)."""
    _require_file(data, "--data")
    if reps < 2:
        raise ConfigError(f"--reps must be >= 2, got {reps}")
    from lola.kernels.policy_table import SETTINGS
    from lola.replay import protocol as P
    from lola.replay import ts_refresh as R

    try:
        values = [float(x) for x in thresholds.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--thresholds must be comma-separated numbers, got {thresholds!r}") from None
    bad = [v for v in values if SETTINGS["ts_refresh"].check(v)]
    if not values or bad:
        raise ConfigError(f"--thresholds: ts_refresh {SETTINGS['ts_refresh'].check(bad[0]) if bad else 'missing'}")
    doc = json_safe(R.run_ts_refresh(R.load_tune_batch(data), P.parse_taus(taus), values, reps, seed))
    doc["data"] = str(data)
    _write_json(out, doc)
    typer.echo(json.dumps(doc) if as_json else R.markdown_ts_refresh(doc))


@replay_app.command("contextual")
def contextual(
    data: Path = typer.Option(..., "--data", help="Upworthy package CSV (archive columns)."),
    priors: Optional[Path] = typer.Option(None, "--priors", help="CSV headline,prior_ctr (from `lola priors score`)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Exported ONNX prior model directory."),
    tune_data: Optional[Path] = typer.Option(None, "--tune-data", help="Tune on this file's tests, report on --data."),
    taus: str = typer.Option("50,200,1000", "--taus", help="Impressions per headline; T = tau * K."),
    reps: int = typer.Option(3, "--reps", help="Repetitions per report test."),
    tune_reps: int = typer.Option(1, "--tune-reps", help="Repetitions per grid point on the tune tests."),
    policies: str = typer.Option("LLM-LinUCB,LinUCB,LLM-FALCON,FALCON", "--policies",
                                 help="Contextual policies (context-free LOLA, UCB, TS always run)."),
    seed: int = typer.Option(20240501, "--seed", help="Master seed (common random numbers across policies)."),
    arm_features: str = typer.Option("slot", "--arm-features",
                                     help="slot (dummy-coded) or model ([1, projected embedding], as the worker's "
                                          "'model' mode; TF-IDF SVD with --priors)."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON result on stdout."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the JSON result to this file."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress on stderr."),
) -> None:
    """Issue 24's contextual benchmark: 4 segments, CTR factors U[0.7, 1.3], 8 noise fields (docs/contextual.md)."""
    _check_inputs(data, priors, model, tune_data, reps)
    from lola.replay import contextual as C
    from lola.replay import protocol as P
    from lola.replay import run as run

    tau_list = P.parse_taus(taus)
    names = tuple(p.strip() for p in policies.split(",") if p.strip())
    bad = [n for n in names if n not in C.CONTEXTUAL]
    if bad or not names or tune_reps < 1:
        raise ConfigError(f"--policies must be among {', '.join(C.CONTEXTUAL)} and --tune-reps >= 1; got {policies!r}")
    if arm_features not in ("slot", "model"):
        raise ConfigError(f"--arm-features must be slot or model, got {arm_features!r}")
    rd = run.load_replay_data(data, priors, model, tune_data, want_features=arm_features == "model")
    factory, stop = _progress_factory(progress)
    try:
        advance = factory(len(tau_list) * (len(C.CONTEXT_FREE) + len(names))) if factory else None
        doc = json_safe(C.run_contextual_replay(rd, tau_list, reps, tune_reps, seed, run.default_workers(), names,
                                                advance, arm_features))
    finally:
        stop()
    _write_json(out, doc)
    if as_json:
        typer.echo(json.dumps(doc))
        return
    for tau, entry in doc["per_tau"].items():
        typer.echo(f"tau {tau}: best context-free {entry['best_context_free']}")
        for name, row in entry["report"].items():
            vs = row.get("vs_best_context_free")
            extra = (f"  vs best context-free {vs['pct']:+.2f} % [{vs['pct_ci95'][0]:+.2f}, {vs['pct_ci95'][1]:+.2f}]"
                     if vs else "")
            typer.echo(f"  {name:11s} {row['fraction_of_oracle']:.4f} of oracle{extra}")


def register(app: typer.Typer) -> None:
    """Add ``lola replay`` (and its ``bai``, ``ts-refresh``, ``baseline-prior``, ``synthetic-prior`` and ``ideal-observer`` subcommands) to the root app."""
    app.add_typer(replay_app, name="replay")
