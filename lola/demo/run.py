"""One run of ``lola demo``, step by step (see :mod:`lola.demo`).

The broker, the worker and the load generator are child processes (the demo runs
what a user would run, and must be able to stop all of it); prior scoring and the
offline replay are library calls in this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.live import Live

from lola.demo import metrics
from lola.demo.live import LiveView, MetricsSampler
from lola.demo.options import REPLAY_POLICIES, RUN_MARKER_ENV, DemoOptions
from lola.demo.report import RunRecord, write_report
from lola.demo.selection import concat_csv, select_tests, write_tests_csv
from lola.demo.stats import allocation_stats, p_best_of_best, uniform_share
from lola.demo.supervisor import Supervisor, surviving_processes
from lola.data.priors import read_priors_csv, write_priors_csv
from lola.errors import LolaError
from lola.export.scoring import score_csv
from lola.replay import run as replay_run
from lola.replay.report import json_safe
from lola.stream.broker import EmbeddedBroker, free_port
from lola.stream.settings import StreamSettings
from lola.stream.snapshot import SnapshotFollower, counts_view, read_snapshots

REPLAY_TUNE_REPS = 3  # `lola replay --tune-reps` default


def lola_argv(*args: str) -> list[str]:
    """Run the CLI of *this* interpreter, so the demo works without an activated venv."""
    return [sys.executable, "-m", "lola.cli", *args]


class Demo:
    """One run of the demo. ``run()`` returns the report path."""

    def __init__(self, options: DemoOptions, console: Console | None = None) -> None:
        self.opts = options
        self.console = console or Console(stderr=True, soft_wrap=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        self.run_id = f"demo-{stamp}-{os.getpid()}"
        self.report_path = options.out_dir / f"demo-{stamp}.md"
        self.rec = RunRecord(self.run_id, options.out_dir / f"demo-{stamp}", options)

    def say(self, text: str) -> None:
        self.console.print(f"[bold cyan]demo[/] {text}")

    def elapsed(self) -> float:
        return time.monotonic() - self.rec.started

    def child_env(self) -> dict[str, str]:
        return {**os.environ, RUN_MARKER_ENV: self.run_id, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
                "PYTHONUNBUFFERED": "1"}

    # ------------------------------------------------------------------ steps
    def prepare(self) -> None:
        opts, rec = self.opts, self.rec
        rec.run_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        rec.tests = select_tests(opts.data, opts.tests, opts.seed, opts.split)
        write_tests_csv(opts.data, rec.tests, rec.run_dir / "tests.csv")
        if opts.split != "tune":
            # The offline replay tunes hyperparameters on tests of the tune split (disjoint by construction).
            rec.tune_tests = select_tests(opts.data, max(opts.tests, 10), opts.seed, "tune")
            write_tests_csv(opts.data, rec.tune_tests, rec.run_dir / "tune.csv")
        rec.timings["select tests"] = time.monotonic() - t0
        self.say(f"{len(rec.tests)} headline tests ({sum(t.n_arms for t in rec.tests)} headlines) from the "
                 f"{opts.split} split -> {rec.run_dir / 'tests.csv'}")

    def score_priors(self) -> None:
        opts, rec = self.opts, self.rec
        if opts.model is None:
            rec.skip("prior model", "no --model given: the worker runs without LLM priors and calibration is skipped")
            return
        out = rec.run_dir / "priors.csv"
        score_in = concat_csv([rec.run_dir / "tests.csv", rec.run_dir / "tune.csv"], rec.run_dir / "score-input.csv")
        t0 = time.monotonic()
        self.say("scoring the headlines with the prior model")
        try:
            score_csv(opts.model, score_in, out)
            rec.priors = read_priors_csv(out)
        except LolaError as exc:
            rec.skip("prior scores", str(exc))
        rec.timings["prior scoring"] = time.monotonic() - t0

    def replay(self) -> None:
        """Offline replay of the same tests (tuned on tune-split tests); its LOLA setting goes to the worker."""
        opts, rec = self.opts, self.rec
        policies = REPLAY_POLICIES
        priors_csv = rec.run_dir / "priors.csv"
        if not rec.priors:
            # E&C and UCB use no prior, so they can still be compared with the worker; the replay
            # needs a prior per headline, so a constant one is written and LOLA is left out.
            policies = tuple(p for p in REPLAY_POLICIES if p != "LOLA")
            priors_csv = rec.run_dir / "constant-priors-unused.csv"
            headlines = sorted({h for t in (*rec.tests, *rec.tune_tests) for h in t.headlines})
            write_priors_csv(priors_csv, headlines, [0.0] * len(headlines))
            rec.skip("offline replay of LOLA", "no prior scores; only E&C and UCB (which use no prior) were replayed")
        self.say(f"offline replay of the same tests: {', '.join(policies)} at tau={opts.tau}, {opts.reps} reps "
                 f"(tuned on {len(rec.tune_tests)} tune-split tests)")
        t0 = time.monotonic()
        try:
            data = replay_run.load_replay_data(rec.run_dir / "tests.csv", priors_csv, None,
                                               rec.run_dir / "tune.csv" if rec.tune_tests else None, want_features=False)
            result = replay_run.run_replay(data, (opts.tau,), policies, opts.reps, REPLAY_TUNE_REPS, opts.seed,
                                           replay_run.default_workers())
        except LolaError as exc:
            rec.skip("offline replay", str(exc))
            return
        finally:
            rec.timings["offline replay"] = time.monotonic() - t0
        rec.replay = json_safe(result.as_json())
        (rec.run_dir / "replay.json").write_text(json.dumps(rec.replay, indent=1), encoding="utf-8")
        tuned = rec.replay["hyperparameters"][str(opts.tau)].get("LOLA", {})
        rec.worker_hyperparameters = {k: float(tuned[k]) for k in ("alpha", "n_aux") if k in tuned}

    def start_broker(self, sup: Supervisor) -> str:
        opts, rec = self.opts, self.rec
        if opts.bootstrap:
            rec.note(f"external broker {opts.bootstrap} (not started by the demo)")
            return opts.bootstrap
        t0 = time.monotonic()
        os.environ[RUN_MARKER_ENV] = self.run_id  # inherited by tansu
        broker = EmbeddedBroker(log_path=rec.run_dir / "broker.log")
        try:
            broker.start()
        finally:
            if broker.process is not None:
                sup.adopt("broker", broker.process, broker.log_path)
        rec.timings["broker start"] = time.monotonic() - t0
        self.say(f"embedded Tansu broker at {broker.bootstrap}")
        return broker.bootstrap

    def worker_env(self, bootstrap: str, metrics_port: int) -> dict[str, str]:
        """The worker's settings (lola.stream.settings), the replay's tuned LOLA setting as its default."""
        env = {**self.child_env(), "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "LOLA_METRICS_PORT": str(metrics_port),
               "LOLA_METRICS_HOST": "127.0.0.1", "LOLA_GROUP_ID": f"lola-demo-{self.run_id}",
               "LOLA_SEED": str(self.opts.seed),
               # the live view samples every 3 s: statistics at most 2 s old (docs/reports.md: cost)
               "LOLA_STATS_INTERVAL_S": "2"}
        hp = self.rec.worker_hyperparameters
        if "alpha" in hp:
            env["LOLA_DEFAULT_ALPHA"] = repr(hp["alpha"])
        if "n_aux" in hp:
            env["LOLA_DEFAULT_N_AUX"] = repr(hp["n_aux"])
        if self.rec.priors:
            env["LOLA_MODEL_DIR"] = str(self.opts.model.resolve())
        return env

    def loadgen_argv(self, bootstrap: str) -> list[str]:
        """The closed loop on exactly the chosen tests: budget tau x K impressions per test."""
        o, rec = self.opts, self.rec
        return lola_argv("loadgen", "closed", "--bootstrap", bootstrap, "--csv", str(rec.run_dir / "tests.csv"),
                         "--tests", str(len(rec.tests)), "--impressions-per-arm", str(o.tau), "--seed", str(o.seed),
                         "--run-id", self.run_id, "--out", str(rec.run_dir / "loadgen.json"),
                         "--timeout", f"{o.duration_s + 60:g}")

    def snapshot(self, bootstrap: str, timeout_s: float = 30.0) -> dict | None:
        """The worker's state from the snapshot topic (one whole read), as ``lola snapshot --json --full``."""
        try:
            doc = counts_view(read_snapshots(StreamSettings.load(bootstrap_servers=bootstrap), timeout_s), full=True)
        except LolaError as exc:
            self.rec.note(f"a snapshot read failed: {exc}")
            return None
        (self.rec.run_dir / "snapshot.json").write_text(json.dumps(doc), encoding="utf-8")
        return doc

    def live_phase(self, sup: Supervisor, bootstrap: str) -> None:
        """Worker + load generator, watched until the load generator ends or the time limit."""
        opts, rec = self.opts, self.rec
        port = free_port()
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        self.say(f"starting the worker (metrics on {metrics_url})")
        t_worker = time.monotonic()
        sup.spawn("worker", lola_argv("worker", "--bootstrap", bootstrap, "--metrics-port", str(port)),
                  env=self.worker_env(bootstrap, port))
        # Ready = partitions assigned and restored (/readyz); starting the load generator
        # earlier would count the group join in the first decisions' latency.
        ready_by = time.monotonic() + 120
        while sup.alive("worker") and not metrics.http_ok(f"http://127.0.0.1:{port}/readyz"):
            if time.monotonic() > ready_by:
                rec.note("the worker did not report ready within 120 s; the load generator was started anyway")
                break
            time.sleep(0.3)
        if not sup.alive("worker"):
            rec.worker_exit = sup.children["worker"].popen.returncode
            rec.skip("live run", f"the worker exited with code {rec.worker_exit} at start: {sup.log_tail('worker')}")
            return
        rec.timings["worker start (until ready)"] = time.monotonic() - t_worker
        self.say("starting the closed-loop load generator on the chosen tests")
        t_live = time.monotonic()
        sup.spawn("loadgen", self.loadgen_argv(bootstrap), env=self.child_env())
        self.watch(sup, bootstrap, metrics_url, t_live + opts.duration_s)
        if sup.alive("loadgen"):
            rec.note(f"the load generator was stopped at the --duration limit ({opts.duration_s:g} s), "
                     f"before the tau={opts.tau} horizon")
            sup.stop("loadgen")
        rec.loadgen_exit = sup.children["loadgen"].popen.returncode
        summary_path = rec.run_dir / "loadgen.json"
        if summary_path.is_file():
            rec.loadgen_summary = json.loads(summary_path.read_text(encoding="utf-8"))
        if rec.loadgen_exit not in (0, None, -signal.SIGTERM):
            rec.skip("load generator", f"exited with code {rec.loadgen_exit}: {sup.log_tail('loadgen')}")
        self.drain(sup, bootstrap)
        rec.timings["live run"] = time.monotonic() - t_live
        self.say("stopping the worker (SIGTERM: final snapshots, checkpoint, commit, exit)")
        rec.worker_exit = sup.stop("worker", grace_s=30)
        if rec.worker_exit not in (0, None):
            rec.skip("worker shutdown", f"the worker exited with code {rec.worker_exit} on SIGTERM: {sup.log_tail('worker')}")
        final = self.snapshot(bootstrap)  # the broker is still up: read what the worker published last
        if final is None:
            rec.skip("final snapshot", "the snapshot topic could not be read; the worker's results cannot be compared")
            return
        rec.final_snapshot = final
        st = rec.final_stats = allocation_stats(final, rec.tests, self.run_id)
        self.say(f"final snapshot: {st.experiments} experiments, {st.impressions:,} impressions, {st.clicks:,} clicks; "
                 f"{st.best_share:.1%} of impressions on the best headline (uniform split: {uniform_share(rec.tests):.1%})")
        sent = (rec.loadgen_summary or {}).get("impressions")
        if isinstance(sent, int) and st.impressions != sent:
            rec.note(f"the final snapshot counts {st.impressions} impressions; the load generator sent {sent}")

    def drain(self, sup: Supervisor, bootstrap: str, limit_s: float = 30.0) -> None:
        """Wait until the worker's snapshots count every impression the load generator sent (or a time limit)."""
        sent = (self.rec.loadgen_summary or {}).get("impressions")
        if not isinstance(sent, int):
            return
        end = time.monotonic() + limit_s
        while time.monotonic() < end and sup.alive("worker"):
            snap = self.snapshot(bootstrap, timeout_s=10)
            if snap is not None and allocation_stats(snap, self.rec.tests, self.run_id).impressions >= sent:
                return
            time.sleep(1.0)

    def watch(self, sup: Supervisor, bootstrap: str, metrics_url: str, deadline: float) -> None:
        """Sample /metrics every second and the snapshot topic every few seconds while the load generator runs."""
        rec = self.rec
        sampler = MetricsSampler(metrics_url)
        horizon = self.opts.tau * sum(t.n_arms for t in rec.tests)
        view = LiveView(uniform_share(rec.tests), horizon)
        settings = StreamSettings.load(bootstrap_servers=bootstrap)
        follower: SnapshotFollower | None = None
        next_snapshot = time.monotonic() + 2.0
        next_log = time.monotonic()
        live = Live(view.render(), console=self.console, refresh_per_second=2) \
            if self.opts.live and self.console.is_terminal else contextlib.nullcontext()
        try:
            with live:
                while time.monotonic() < deadline and sup.alive("loadgen"):
                    if not sup.alive("worker"):
                        rec.skip("live run", f"the worker died mid-run (code {sup.children['worker'].popen.returncode}): "
                                             f"{sup.log_tail('worker')}")
                        break
                    sample = sampler.sample(self.elapsed())
                    if time.monotonic() >= next_snapshot:
                        try:
                            follower = follower or SnapshotFollower(settings, f"lola-demo-snapshots-{os.getpid()}")
                            polled = follower.poll()
                            stats = allocation_stats(counts_view(polled, full=True), rec.tests, self.run_id)
                            sample.update(best_share=stats.best_share, impressions=stats.impressions,
                                          clicks=stats.clicks, experiments=stats.experiments,
                                          **p_best_of_best(polled, rec.tests, self.run_id))
                            view.stats = stats
                        except LolaError as exc:  # the topic appears with the worker's first snapshot
                            rec.note(f"a live snapshot read failed: {exc}")
                        next_snapshot = time.monotonic() + 3.0
                    rec.history.append(sample)
                    view.sample = sample
                    if isinstance(live, Live):
                        live.update(view.render())
                    elif time.monotonic() >= next_log:
                        self.say(view.line())
                        next_log = time.monotonic() + 5.0
                    sup.note_descendants()
                    time.sleep(1.0)
        finally:
            if follower is not None:
                follower.close()

    # ------------------------------------------------------------------ the whole run
    def run(self) -> Path:
        rec = self.rec
        self.prepare()
        sup = Supervisor(rec.run_dir / "logs", env=self.child_env())
        try:
            with sup:
                self.score_priors()
                self.replay()
                rec.bootstrap = self.start_broker(sup)
                self.live_phase(sup, rec.bootstrap)
        except KeyboardInterrupt:
            rec.interrupted = True
            self.console.print("[bold red]demo interrupted[/]: stopping every child process")
        finally:
            sup.stop_all()
            sup.write_pids(rec.run_dir / "pids.json")
            if os.environ.get(RUN_MARKER_ENV) == self.run_id:
                del os.environ[RUN_MARKER_ENV]
            rec.survivors = surviving_processes(self.run_id)
            if rec.survivors:
                rec.skip("cleanup", f"processes still alive after stopping everything: {rec.survivors}")
        rec.timings["total"] = self.elapsed()
        path = write_report(rec, self.report_path)
        self.say(f"report: {path}")
        if rec.interrupted:
            raise KeyboardInterrupt
        return path

