"""``lola demo``: the main job, end to end, on the embedded broker and the default model.

What it does, in order (each step runs the project's own commands as child
processes, so the demo exercises exactly what a user would run):

1. picks ``--tests`` Upworthy headline tests from the *test* split of the dev data
   (never used to train the prior model) and writes them to ``<run>/tests.csv``;
2. scores their headlines with the prior model (``lola priors score``);
3. starts the embedded Tansu broker (:class:`lola.stream.broker.EmbeddedBroker`),
   the worker (``lola worker``) and the closed-loop load generator
   (``lola loadgen closed``), and shows live progress: events/s and consumer lag
   from the worker's ``/metrics``, and the share of traffic on each test's best
   headline from the snapshot topic (``lola snapshot``);
4. replays the same tests offline (``lola replay``) for UCB, E&C and LOLA;
5. writes ``reports/demo-<timestamp>.md`` with PNG plots.

Every child runs in its own session (process group); the demo stops them all in
``finally``, escalating to SIGKILL for any descendant still alive, and Ctrl-C
(SIGINT), SIGTERM and SIGHUP all take that path. Children also get
``PR_SET_PDEATHSIG`` so that even a SIGKILL of the demo stops its direct
children. Every process started carries ``LOLA_DEMO_RUN=<run id>`` in its
environment, which is how the tests prove that nothing survives.

When a step's command is missing or fails, the demo goes on without it and the
report's "Skipped or degraded" section says what and why; nothing is faked.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import typer

from lola.errors import ConfigError, LolaError

RUN_MARKER_ENV = "LOLA_DEMO_RUN"
REPORT_SECTIONS = (
    "## Run",
    "## Live run: the worker on the broker",
    "## Clicks: worker vs offline replay",
    "## Allocation over time",
    "## Prior calibration",
    "## Skipped or degraded",
    "## Reproduce",
)
REPLAY_POLICIES = ("E&C", "UCB", "LOLA")
DEFAULT_MODEL_DIR = Path("models") / "ctr-onnx"


# ====================================================================== options


@dataclass(frozen=True)
class DemoOptions:
    """Validated settings of one demo run."""

    model: Path | None
    data: Path
    tests: int = 100
    tau: int = 500
    duration_s: float = 480.0
    reps: int = 10
    seed: int = 7
    out_dir: Path = Path("reports")
    bootstrap: str | None = None
    split: str = "test"
    live: bool = True

    def __post_init__(self) -> None:
        if self.tests < 1:
            raise ConfigError(f"--tests must be >= 1, got {self.tests}")
        if not 1 <= self.tau <= 100_000:
            raise ConfigError(f"--tau must be in 1..100000, got {self.tau}")
        if not 5 <= self.duration_s <= 86_400:
            raise ConfigError(f"--duration must be in 5..86400 seconds, got {self.duration_s:g}")
        if not 1 <= self.reps <= 1000:
            raise ConfigError(f"--reps must be in 1..1000, got {self.reps}")
        if self.split not in ("train", "tune", "test"):
            raise ConfigError(f"--split must be train, tune or test, got {self.split!r}")
        if not self.data.is_file():
            raise ConfigError(f"--data {self.data} is not a file")
        if self.bootstrap is not None and not re.fullmatch(r"[^,:\s]+:\d+(,[^,:\s]+:\d+)*", self.bootstrap):
            raise ConfigError(f"--bootstrap must be HOST:PORT[,HOST:PORT], got {self.bootstrap!r}")


SHORT = {"tests": 6, "tau": 20, "duration_s": 40.0, "reps": 2}


# ====================================================================== child processes


def _pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM this child when its parent dies (even by SIGKILL)."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


@dataclass
class Child:
    name: str
    popen: subprocess.Popen
    log_path: Path | None
    seen: set[int] = field(default_factory=set)


class Supervisor:
    """Starts children in their own process groups and stops all of them, always.

    Use as a context manager: SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt in
    the main thread while it is active, and leaving it stops every child (and
    every descendant seen) with SIGTERM, then SIGKILL after ``grace_s``.
    """

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None, grace_s: float = 15.0) -> None:
        self.log_dir = log_dir
        self.env = dict(env or os.environ)
        self.grace_s = grace_s
        self.children: dict[str, Child] = {}
        self._old_handlers: dict[int, Any] = {}
        self._stopping = False
        self._lock = threading.Lock()

    # --- lifecycle
    def __enter__(self) -> "Supervisor":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop_all()
        finally:
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)
            self._old_handlers.clear()

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._stopping:
            return  # already cleaning up: a second Ctrl-C must not abort the cleanup
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    # --- starting
    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        if name in self.children and self.children[name].popen.poll() is None:
            raise LolaError(f"child {name} is already running")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "ab")
        try:
            popen = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**self.env, **(env or {})}, preexec_fn=_pdeathsig, close_fds=True,
            )
        finally:
            log.close()  # the child holds its own descriptor
        self.children[name] = Child(name, popen, log_path)
        self.note_descendants()
        return popen

    def adopt(self, name: str, popen: subprocess.Popen, log_path: Path | None = None) -> None:
        """Track a process started elsewhere (e.g. the broker launcher) so it is stopped too."""
        self.children[name] = Child(name, popen, log_path)

    def run(self, name: str, argv: Sequence[str], timeout_s: float, env: dict[str, str] | None = None) -> int:
        """Run a child to completion (killing it at ``timeout_s``); returns its exit code."""
        popen = self.spawn(name, argv, env)
        try:
            return popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop(name)
            return 124

    # --- watching
    def note_descendants(self) -> None:
        """Remember every descendant pid now alive, so a SIGKILL can reach grandchildren later."""
        import psutil

        for child in list(self.children.values()):
            if child.popen.poll() is not None:
                continue
            try:
                child.seen.update(p.pid for p in psutil.Process(child.popen.pid).children(recursive=True))
            except psutil.Error:
                pass

    def alive(self, name: str) -> bool:
        child = self.children.get(name)
        return child is not None and child.popen.poll() is None

    def all_pids(self) -> set[int]:
        pids: set[int] = set()
        for child in self.children.values():
            pids.add(child.popen.pid)
            pids.update(child.seen)
        return pids

    # --- stopping
    def stop(self, name: str, sig: int = signal.SIGTERM, grace_s: float | None = None) -> int | None:
        """Stop one child and its descendants; returns its exit code."""
        import psutil

        child = self.children.get(name)
        if child is None:
            return None
        grace = self.grace_s if grace_s is None else grace_s
        proc = child.popen
        try:
            child.seen.update(p.pid for p in psutil.Process(proc.pid).children(recursive=True))
        except psutil.Error:
            pass
        if proc.poll() is None:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # SIGKILL whatever is left: the child's process group, then any descendant seen.
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait()
        for pid in child.seen:
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    p.terminate()
                    try:
                        p.wait(timeout=min(grace, 5.0))
                    except psutil.TimeoutExpired:
                        p.kill()
            except psutil.Error:
                pass
        return proc.returncode

    def stop_all(self) -> None:
        """Stop every child, newest first (load generator, worker, then the broker)."""
        with self._lock:
            self._stopping = True
            try:
                for name in reversed(list(self.children)):
                    self.stop(name)
            finally:
                self._stopping = False


# ====================================================================== tests and truth


@dataclass(frozen=True)
class DemoTest:
    """One headline test as the demo sees it: archive truth plus the ids used on the wire."""

    test_id: str
    eyecatcher_id: str
    headlines: tuple[str, ...]
    true_ctr: tuple[float, ...]

    @property
    def best(self) -> int:
        return max(range(len(self.true_ctr)), key=self.true_ctr.__getitem__)


def select_tests(data: Path, n: int, seed: int, split: str) -> list[DemoTest]:
    """``n`` headline tests from one split, in a seeded random order."""
    import numpy as np

    from lola.data.upworthy import headline_tests, load_packages, split_packages

    packages, _ = load_packages(data)
    chosen = split_packages(packages)[split]
    tests = [t for t in headline_tests(chosen) if np.all(t.impressions > 0)]
    if not tests:
        raise ConfigError(f"no headline tests in the {split} split of {data}")
    order = np.random.default_rng(seed).permutation(len(tests))[:n]
    out = []
    for i in sorted(order):
        t = tests[int(i)]
        out.append(DemoTest(t.test_id, t.eyecatcher_id, tuple(t.headlines), tuple(float(c) for c in t.ctrs)))
    return out


def write_tests_csv(data: Path, tests: Sequence[DemoTest], out: Path) -> Path:
    """The archive rows of the chosen tests, with the archive's own columns."""
    keys = {(t.test_id, t.eyecatcher_id) for t in tests}
    with open(data, newline="", encoding="utf-8") as src, open(out, "w", newline="", encoding="utf-8") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames or [])
        writer.writeheader()
        for row in reader:
            if (row.get("clickability_test_id"), row.get("eyecatcher_id")) in keys:
                writer.writerow(row)
    return out


def _concat_csv(paths: Sequence[Path], out: Path) -> Path:
    """Rows of several CSVs with the same header, in order (missing files are skipped)."""
    header_written = False
    with open(out, "w", newline="", encoding="utf-8") as dst:
        writer = None
        for path in paths:
            if not path.is_file():
                continue
            with open(path, newline="", encoding="utf-8") as src:
                reader = csv.DictReader(src)
                if writer is None:
                    writer = csv.DictWriter(dst, fieldnames=reader.fieldnames or [])
                if not header_written:
                    writer.writeheader()
                    header_written = True
                for row in reader:
                    writer.writerow(row)
    return out


def read_priors(path: Path) -> dict[str, float]:
    """``headline,prior_ctr`` CSV (as ``lola priors score`` writes it) to a dict."""
    out: dict[str, float] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            # Stripped like lola.data.upworthy strips headlines (the archive has trailing spaces).
            out[(row["headline"] or "").strip()] = float(row["prior_ctr"])
    return out


# ====================================================================== commands available


def lola_commands() -> set[str]:
    """Command paths the installed ``lola`` offers, e.g. ``{"worker", "loadgen closed"}``."""
    from lola.cli import app

    root = typer.main.get_command(app)
    found: set[str] = set()

    def walk(cmd: Any, prefix: str) -> None:
        # typer vendors click in recent releases; a group is anything with .commands.
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            path = f"{prefix} {name}".strip()
            found.add(path)
            walk(sub, path)

    walk(root, "")
    return found


def lola_argv(*args: str) -> list[str]:
    """Run the CLI of *this* interpreter, so the demo works without an activated venv."""
    return [sys.executable, "-m", "lola.cli", *args]


# ====================================================================== metrics and snapshots


def scrape_metrics(url: str, timeout_s: float = 2.0) -> dict[str, float]:
    """Prometheus text from ``url``: each sample name summed over its label sets."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback URL we built
        text = resp.read().decode("utf-8", "replace")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if math.isfinite(sample.value):
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def _http_ok(url: str, timeout_s: float = 1.0) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback URL we built
            return 200 <= resp.status < 300
    except (OSError, urllib.error.URLError):
        return False


def pick_metric(metrics: dict[str, float], patterns: Iterable[str]) -> float | None:
    """The first metric whose name matches one of ``patterns`` (regexes), in order."""
    for pattern in patterns:
        rx = re.compile(pattern)
        hits = [v for k, v in metrics.items() if rx.fullmatch(k)]
        if hits:
            return float(sum(hits))
    return None


EVENTS_METRIC = (r"lola_records_total", r"lola_events_total")
EVENTS_PER_S_METRIC = (r"lola_events_per_second",)
LAG_METRIC = (r"lola_consumer_lag(_messages)?", r"lola_.*lag.*")
DECISIONS_METRIC = (r"lola_decisions_total", r"lola_.*decisions.*_total")
DEADLETTER_METRIC = (r"lola_dead_?letters?_total", r"lola_.*dead.*_total")


def match_experiments(snapshot: dict[str, dict], tests: Sequence[DemoTest]) -> dict[str, tuple[DemoTest, dict[str, int]]]:
    """Map snapshot experiment ids to tests, and variant ids to headline indices.

    ``lola loadgen closed`` names an experiment ``<run id>-<test id>-<eyecatcher id>``
    and its variants ``h0, h1, ...`` in headline order; an experiment id that is, or
    ends with, ``<test id>-<eyecatcher id>`` (or ``:``-joined, or the bare test id)
    matches. Experiments or variants that match nothing are left out.
    """
    by_key: dict[str, DemoTest] = {}
    for t in tests:
        for key in (f"{t.test_id}-{t.eyecatcher_id}", f"{t.test_id}:{t.eyecatcher_id}", t.test_id):
            by_key.setdefault(key, t)
    out: dict[str, tuple[DemoTest, dict[str, int]]] = {}
    for exp_id, arms in snapshot.items():
        test = by_key.get(exp_id)
        if test is None:
            m = re.search(r"([0-9a-f]{24}-[0-9a-f]{24})$", exp_id)
            test = by_key.get(m.group(1)) if m else None
        if test is None:
            continue
        index: dict[str, int] = {}
        for variant_id, arm in arms.items():
            if not isinstance(arm, dict):
                continue
            i = _variant_index(variant_id, arm, test)
            if i is not None:
                index[variant_id] = i
        out[exp_id] = (test, index)
    return out


def _variant_index(variant_id: str, arm: dict, test: DemoTest) -> int | None:
    text = arm.get("text") or arm.get("headline")
    if isinstance(text, str) and text in test.headlines:
        return test.headlines.index(text)
    if variant_id in test.headlines:
        return test.headlines.index(variant_id)
    m = re.search(r"(\d+)$", variant_id)
    if m and int(m.group(1)) < len(test.headlines):
        return int(m.group(1))
    return None


@dataclass
class AllocationStats:
    """What the worker did on the matched experiments, from one snapshot."""

    experiments: int = 0
    impressions: int = 0
    clicks: int = 0
    best_share: float = float("nan")      # share of impressions on each test's best headline
    # LOLA's score, clicks per test per period = total clicks / tau over a horizon of tau*K
    # impressions; written per impression as K * clicks / impressions so that a run stopped
    # before the horizon is still on the same scale. Mean over tests.
    expected_clicks_per_period: float = float("nan")  # K * (impressions @ archive CTR) / impressions
    realised_clicks_per_period: float = float("nan")  # K * clicks / impressions
    realised_se: float = float("nan")
    per_test: list[dict] = field(default_factory=list)


def allocation_stats(snapshot: dict[str, dict], tests: Sequence[DemoTest]) -> AllocationStats:
    """Summarise a ``lola snapshot --json`` document against the archive truth."""
    import numpy as np

    stats = AllocationStats()
    best_hits = 0
    expected, realised = [], []
    for exp_id, (test, index) in match_experiments(snapshot, tests).items():
        imps = np.zeros(len(test.headlines))
        clicks = np.zeros(len(test.headlines))
        for variant_id, i in index.items():
            arm = snapshot[exp_id][variant_id]
            imps[i] += float(arm.get("impressions", 0) or 0)
            clicks[i] += float(arm.get("clicks", 0) or 0)
        n = imps.sum()
        if n <= 0:
            continue
        stats.experiments += 1
        stats.impressions += int(n)
        stats.clicks += int(clicks.sum())
        best_hits += int(imps[test.best])
        ctr = np.asarray(test.true_ctr)
        k = len(test.headlines)
        expected.append(float(k * (imps @ ctr) / n))
        realised.append(float(k * clicks.sum() / n))
        stats.per_test.append({
            "experiment_id": exp_id, "arms": len(test.headlines), "impressions": int(n),
            "clicks": int(clicks.sum()), "best_share": float(imps[test.best] / n),
            "shares": (imps / n).round(3).tolist(), "true_ctr": [round(c, 4) for c in test.true_ctr],
            "realised_ctr": [float(c / i) if i else float("nan") for c, i in zip(clicks, imps)],
        })
    if stats.impressions:
        stats.best_share = best_hits / stats.impressions
        stats.expected_clicks_per_period = float(np.mean(expected))
        stats.realised_clicks_per_period = float(np.mean(realised))
        stats.realised_se = float(np.std(realised, ddof=1) / math.sqrt(len(realised))) if len(realised) > 1 else float("nan")
    return stats


def reference_clicks(tests: Sequence[DemoTest]) -> dict[str, float]:
    """Clicks per test per period of two fixed allocations, from the archive truth: uniform and oracle."""
    import numpy as np

    return {
        "uniform (A/B split)": float(np.mean([np.sum(t.true_ctr) for t in tests])),
        "oracle (best headline always)": float(np.mean([len(t.true_ctr) * max(t.true_ctr) for t in tests])),
    }


class SnapshotFollower:
    """Follows the compacted snapshot topic incrementally: the latest record per experiment.

    The live view polls this every few seconds; re-reading the whole topic each time
    (what ``lola snapshot`` does, correctly, for a one-off read) would load the broker
    and the two cores more and more as the run goes on.
    """

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from lola.stream import kafka as kf
        from lola.stream.settings import StreamSettings

        self.settings = StreamSettings.load(bootstrap_servers=bootstrap)
        topic = self.settings.snapshots_topic
        conf = kf.consumer_config(self.settings, f"lola-demo-snapshots-{os.getpid()}",
                                  **{"queued.max.messages.kbytes": 65_536})
        self.consumer = Consumer(conf)
        meta = self.consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            self.consumer.close()
            raise LolaError(f"snapshot topic {topic} is not available yet")
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)])
        self.latest: dict[str, dict] = {}

    def poll(self, budget_s: float = 1.0) -> dict[str, dict]:
        """Apply what arrived since the last call; returns the counts view (full arm fields)."""
        import orjson

        from lola.stream.snapshot import counts_view

        end = time.monotonic() + budget_s
        while time.monotonic() < end:
            msgs = self.consumer.consume(10_000, 0.05)
            if not msgs:
                break
            for msg in msgs:
                if msg.error() is not None or not msg.value():
                    continue
                try:
                    snap = orjson.loads(msg.value())
                except orjson.JSONDecodeError:
                    continue
                exp = snap.get("experiment_id") or (msg.key() or b"").decode("utf-8", "replace")
                self.latest[exp] = snap
        return counts_view(self.latest, full=True)

    def close(self) -> None:
        self.consumer.close()


# ====================================================================== the run


@dataclass
class RunRecord:
    """Everything the report needs; filled step by step."""

    run_id: str
    run_dir: Path
    options: DemoOptions
    started: float = field(default_factory=time.monotonic)
    started_utc: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))
    tests: list[DemoTest] = field(default_factory=list)
    tune_tests: list[DemoTest] = field(default_factory=list)
    worker_hyperparameters: dict[str, float] = field(default_factory=dict)
    loadgen_summary: dict | None = None
    priors: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)  # live samples
    final_snapshot: dict[str, dict] = field(default_factory=dict)
    final_stats: AllocationStats | None = None
    replay: dict | None = None
    bootstrap: str = ""
    loadgen_exit: int | None = None
    worker_exit: int | None = None
    interrupted: bool = False
    last_metrics: dict[str, float] = field(default_factory=dict)
    survivors: list[int] = field(default_factory=list)

    def skip(self, what: str, why: str) -> None:
        self.skipped.append(f"{what}: {why}")


def _tail(path: Path | None, lines: int = 3) -> str:
    if path is None or not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return " / ".join(line.strip() for line in text[-lines:])[:400]


class Demo:
    """One run of the demo. ``run()`` returns the report path."""

    def __init__(self, options: DemoOptions, console: Any = None) -> None:
        from rich.console import Console

        self.opts = options
        self.console = console or Console(stderr=True, soft_wrap=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        self.run_id = f"demo-{stamp}-{os.getpid()}"
        self.report_path = options.out_dir / f"demo-{stamp}.md"
        run_dir = options.out_dir / f"demo-{stamp}"
        self.rec = RunRecord(self.run_id, run_dir, options)
        self.commands: set[str] = set()

    # --- small helpers
    def say(self, text: str) -> None:
        self.console.print(f"[bold cyan]demo[/] {text}")

    def elapsed(self) -> float:
        return time.monotonic() - self.rec.started

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[RUN_MARKER_ENV] = self.run_id
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    # --- steps
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
        arms = sum(len(t.headlines) for t in rec.tests)
        self.say(f"{len(rec.tests)} headline tests ({arms} headlines) from the {opts.split} split -> {rec.run_dir / 'tests.csv'}")
        self.commands = lola_commands()

    def score_priors(self, sup: Supervisor) -> None:
        opts, rec = self.opts, self.rec
        if opts.model is None:
            rec.skip("prior model", "no --model given: the worker runs without LLM priors and calibration is skipped")
            return
        if not (opts.model / "model_card.json").is_file():
            rec.skip("prior model", f"{opts.model}/model_card.json is missing (build it with `make model`)")
            return
        if "priors score" not in self.commands:
            rec.skip("prior scores", "`lola priors score` is not available in this build")
            return
        out = rec.run_dir / "priors.csv"
        score_in = rec.run_dir / "score-input.csv"
        _concat_csv([rec.run_dir / "tests.csv", rec.run_dir / "tune.csv"], score_in)
        t0 = time.monotonic()
        self.say("scoring the headlines with the prior model (lola priors score)")
        code = sup.run("priors-score", lola_argv("priors", "score", "--model", str(opts.model),
                                                  "--in", str(score_in), "--out", str(out)), timeout_s=600)
        rec.timings["prior scoring"] = time.monotonic() - t0
        if code != 0 or not out.is_file():
            rec.skip("prior scores", f"`lola priors score` exited {code}: {_tail(sup.children['priors-score'].log_path)}")
            return
        rec.priors = read_priors(out)

    def start_broker(self, sup: Supervisor) -> str | None:
        opts, rec = self.opts, self.rec
        if opts.bootstrap:
            rec.notes.append(f"external broker {opts.bootstrap} (not started by the demo)")
            return opts.bootstrap
        try:
            from lola.stream.broker import EmbeddedBroker
        except ImportError as exc:
            rec.skip("broker", f"lola.stream.broker is not available ({exc})")
            return None
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
        env = self._child_env()
        env.update({
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "LOLA_METRICS_PORT": str(metrics_port),
            "LOLA_METRICS_HOST": "127.0.0.1",
            "LOLA_GROUP_ID": f"lola-demo-{self.run_id}",
            "LOLA_SEED": str(self.opts.seed),
        })
        if self.opts.model is not None and (self.opts.model / "model_card.json").is_file():
            env["LOLA_MODEL_DIR"] = str(self.opts.model.resolve())
        return env

    def loadgen_argv(self, bootstrap: str) -> list[str]:
        """The closed loop on exactly the chosen tests: budget tau x K impressions per test."""
        o, rec = self.opts, self.rec
        argv = lola_argv("loadgen", "closed", "--bootstrap", bootstrap, "--csv", str(rec.run_dir / "tests.csv"),
                         "--tests", str(len(rec.tests)), "--impressions-per-arm", str(o.tau), "--seed", str(o.seed),
                         "--out", str(rec.run_dir / "loadgen.json"), "--timeout", f"{o.duration_s + 60:g}")
        hp = rec.worker_hyperparameters
        if "alpha" in hp:
            argv += ["--alpha", repr(hp["alpha"])]
        if "n_aux" in hp:
            argv += ["--n-aux", repr(hp["n_aux"])]
        return argv

    def snapshot(self, sup: Supervisor, bootstrap: str, timeout_s: float = 30.0) -> dict | None:
        """The worker's state from the snapshot topic, as ``lola snapshot --json`` prints it (full arm fields).

        Read in-process with :mod:`lola.stream.snapshot` (a polling loop must not pay a
        Python start-up per read on two cores); ``lola snapshot`` is the fallback.
        """
        try:
            from lola.stream.settings import StreamSettings
            from lola.stream.snapshot import counts_view, read_snapshots
        except ImportError:
            return self._snapshot_cli(sup, bootstrap, timeout_s)
        try:
            settings = StreamSettings.load(bootstrap_servers=bootstrap)
            doc = counts_view(read_snapshots(settings, timeout_s=timeout_s), full=True)
        except LolaError as exc:
            self.rec.notes.append(f"a snapshot read failed: {exc}") if len(self.rec.notes) < 20 else None
            return None
        (self.rec.run_dir / "snapshot.json").write_text(json.dumps(doc), encoding="utf-8")
        return doc

    def _snapshot_cli(self, sup: Supervisor, bootstrap: str, timeout_s: float) -> dict | None:
        if "snapshot" not in self.commands:
            return None
        name = "snapshot"
        popen = sup.spawn(name, lola_argv("snapshot", "--bootstrap", bootstrap, "--json"), env=self._child_env())
        try:
            popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            sup.stop(name, grace_s=2)
            return None
        log = sup.children[name].log_path
        if popen.returncode != 0 or log is None:
            return None
        doc = _last_json_object(log.read_text(encoding="utf-8", errors="replace"))
        log.unlink(missing_ok=True)
        if isinstance(doc, dict):
            (self.rec.run_dir / "snapshot.json").write_text(json.dumps(doc), encoding="utf-8")
        return doc

    def live_phase(self, sup: Supervisor, bootstrap: str) -> None:
        """Worker + load generator, watched until the load generator ends or the time limit."""
        from lola.stream.broker import free_port

        opts, rec = self.opts, self.rec
        for needed in ("worker", "loadgen closed"):
            if needed not in self.commands:
                rec.skip("live run", f"`lola {needed}` is not available in this build; no events were streamed")
                return
        port = free_port()
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        self.say(f"starting the worker (metrics on {metrics_url})")
        t_worker = time.monotonic()
        sup.spawn("worker", lola_argv("worker", "--bootstrap", bootstrap, "--metrics-port", str(port)),
                  env=self.worker_env(bootstrap, port))
        # Ready = partitions assigned and restored (/readyz); starting the load generator
        # earlier would count the group join in the first decisions' latency.
        ready_url = metrics_url.replace("/metrics", "/readyz")
        ready_by = time.monotonic() + 120
        while time.monotonic() < ready_by and sup.alive("worker"):
            if _http_ok(ready_url):
                break
            time.sleep(0.3)
        else:
            if sup.alive("worker"):
                rec.notes.append("the worker did not report ready within 120 s; the load generator was started anyway")
        if not sup.alive("worker"):
            rec.worker_exit = sup.children["worker"].popen.returncode
            rec.skip("live run", f"the worker exited with code {rec.worker_exit} at start: {_tail(sup.children['worker'].log_path)}")
            return
        rec.timings["worker start (until ready)"] = time.monotonic() - t_worker
        self.say("starting the closed-loop load generator on the chosen tests")
        t_live = time.monotonic()
        sup.spawn("loadgen", self.loadgen_argv(bootstrap), env={**self._child_env(), "KAFKA_BOOTSTRAP_SERVERS": bootstrap})
        deadline = t_live + opts.duration_s
        self._watch(sup, bootstrap, metrics_url, deadline)
        if sup.alive("loadgen"):
            rec.notes.append(f"the load generator was stopped at the --duration limit ({opts.duration_s:g} s), before the tau={opts.tau} horizon")
            sup.stop("loadgen")
        rec.loadgen_exit = sup.children["loadgen"].popen.returncode
        summary_path = rec.run_dir / "loadgen.json"
        if summary_path.is_file():
            try:
                rec.loadgen_summary = json.loads(summary_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                pass
        if rec.loadgen_exit not in (0, None, -signal.SIGTERM):
            rec.skip("load generator", f"exited with code {rec.loadgen_exit}: {_tail(sup.children['loadgen'].log_path)}")
        self._drain(sup, bootstrap)
        rec.timings["live run"] = time.monotonic() - t_live
        self.say("stopping the worker (SIGTERM: final snapshots, checkpoint, commit, exit)")
        rec.worker_exit = sup.stop("worker", grace_s=30)
        if rec.worker_exit not in (0, None):
            rec.skip("worker shutdown", f"the worker exited with code {rec.worker_exit} on SIGTERM: {_tail(sup.children['worker'].log_path)}")
        final = self.snapshot(sup, bootstrap)  # the broker is still up: read what the worker published last
        if final is None:
            rec.skip("final snapshot", "the snapshot topic could not be read; the worker's results cannot be compared")
        else:
            rec.final_snapshot = final
            rec.final_stats = allocation_stats(final, rec.tests)
            st = rec.final_stats
            uniform = sum(1 / len(t.headlines) for t in rec.tests) / len(rec.tests)
            self.say(f"final snapshot: {st.experiments} experiments, {st.impressions:,} impressions, {st.clicks:,} clicks; "
                     f"{st.best_share:.1%} of impressions on the best headline (uniform split: {uniform:.1%})")
            sent = (rec.loadgen_summary or {}).get("impressions")
            if isinstance(sent, int) and rec.final_stats.impressions != sent:
                rec.notes.append(f"the final snapshot counts {rec.final_stats.impressions} impressions; "
                                 f"the load generator sent {sent}")

    def _drain(self, sup: Supervisor, bootstrap: str, limit_s: float = 30.0) -> None:
        """Wait until the worker's snapshots count every impression the load generator sent (or a time limit)."""
        sent = (self.rec.loadgen_summary or {}).get("impressions")
        if not isinstance(sent, int):
            return
        end = time.monotonic() + limit_s
        while time.monotonic() < end and sup.alive("worker"):
            snap = self.snapshot(sup, bootstrap, timeout_s=10)
            if snap is not None and allocation_stats(snap, self.rec.tests).impressions >= sent:
                return
            time.sleep(1.0)

    def _watch(self, sup: Supervisor, bootstrap: str, metrics_url: str, deadline: float) -> None:
        from rich.live import Live

        rec = self.rec
        last_events, last_t = None, time.monotonic()
        next_snapshot = time.monotonic() + 2.0
        view = _LiveView(self)
        use_live = self.opts.live and self.console.is_terminal
        follower: SnapshotFollower | None = None
        next_log = time.monotonic()
        try:
            with Live(view.render(), console=self.console, refresh_per_second=2, transient=False) if use_live else _nullcontext() as live:
                while time.monotonic() < deadline and sup.alive("loadgen"):
                    if not sup.alive("worker"):
                        rec.skip("live run", f"the worker died mid-run (code {sup.children['worker'].popen.returncode}): {_tail(sup.children['worker'].log_path)}")
                        break
                    now = time.monotonic()
                    sample: dict[str, Any] = {"t": round(self.elapsed(), 2)}
                    try:
                        metrics = scrape_metrics(metrics_url)
                        rec.last_metrics = metrics
                        events = pick_metric(metrics, EVENTS_METRIC)
                        sample["events"] = events
                        sample["lag"] = pick_metric(metrics, LAG_METRIC)
                        sample["decisions"] = pick_metric(metrics, DECISIONS_METRIC)
                        sample["deadletters"] = pick_metric(metrics, DEADLETTER_METRIC)
                        rate = pick_metric(metrics, EVENTS_PER_S_METRIC)
                        if rate is not None:
                            sample["events_per_s"] = rate
                        elif events is not None and last_events is not None and now > last_t:
                            sample["events_per_s"] = (events - last_events) / (now - last_t)
                        last_events, last_t = events, now
                    except OSError:
                        pass
                    if now >= next_snapshot:
                        t_read = time.monotonic()
                        snap = None
                        try:
                            follower = follower or SnapshotFollower(bootstrap)
                            snap = follower.poll()
                        except (ImportError, LolaError):
                            snap = self.snapshot(sup, bootstrap, timeout_s=15)  # whole-topic read
                        except Exception as exc:  # a librdkafka hiccup must not end the demo
                            rec.notes.append(f"a live snapshot read failed: {exc}") if len(rec.notes) < 20 else None
                        read_s = time.monotonic() - t_read
                        if snap:
                            stats = allocation_stats(snap, rec.tests)
                            sample.update(best_share=stats.best_share, impressions=stats.impressions, clicks=stats.clicks,
                                          experiments=stats.experiments)
                            view.stats = stats
                            # A whole-topic re-read (fallback) gets slower as the run goes on: keep it under ~20% of a core.
                        next_snapshot = time.monotonic() + max(3.0, 5.0 * read_s)
                    rec.history.append(sample)
                    view.sample = sample
                    if live is not None:
                        live.update(view.render())
                    elif time.monotonic() >= next_log:
                        self.say(view.line())
                        next_log = time.monotonic() + 5.0
                    sup.note_descendants()
                    time.sleep(1.0)
        finally:
            if follower is not None:
                follower.close()

    def replay(self, sup: Supervisor) -> None:
        """Offline replay of the same tests (tuned on tune-split tests); its LOLA settings go to the worker."""
        opts, rec = self.opts, self.rec
        if "replay" not in self.commands:
            rec.skip("offline replay", "`lola replay` is not available in this build; no UCB/E&C comparison")
            return
        policies = REPLAY_POLICIES
        priors_csv = rec.run_dir / "priors.csv"
        if not rec.priors:
            # E&C and UCB use no prior, so they can still be compared with the worker. `lola replay`
            # insists on a priors file; a constant one is written and LOLA is left out.
            policies = tuple(p for p in REPLAY_POLICIES if p != "LOLA")
            priors_csv = rec.run_dir / "constant-priors-unused.csv"
            headlines = sorted({h for t in (*rec.tests, *rec.tune_tests) for h in t.headlines})
            with open(priors_csv, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["headline", "prior_ctr"])
                w.writerows([h, "0.0"] for h in headlines)
            rec.skip("offline replay of LOLA", "no prior scores; only E&C and UCB (which use no prior) were replayed")
        out = rec.run_dir / "replay.json"
        argv = lola_argv("replay", "--data", str(rec.run_dir / "tests.csv"), "--priors", str(priors_csv),
                         "--taus", str(opts.tau), "--reps", str(opts.reps), "--policies", ",".join(policies),
                         "--seed", str(opts.seed), "--out", str(out), "--no-progress")
        if rec.tune_tests:
            argv += ["--tune-data", str(rec.run_dir / "tune.csv")]
        self.say(f"offline replay of the same tests: {', '.join(policies)} at tau={opts.tau}, {opts.reps} reps "
                 f"(tuned on {len(rec.tune_tests)} tune-split tests)")
        t0 = time.monotonic()
        code = sup.run("replay", argv, timeout_s=600)
        rec.timings["offline replay"] = time.monotonic() - t0
        log = sup.children["replay"].log_path
        if code != 0 or not out.is_file():
            rec.skip("offline replay", f"`lola replay` exited {code}: {_tail(log)}")
            return
        try:
            rec.replay = json.loads(out.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            rec.skip("offline replay", f"unreadable {out}: {exc}")
            return
        tuned = (rec.replay.get("hyperparameters", {}).get(str(opts.tau), {}) or {}).get("LOLA", {})
        for key in ("alpha", "n_aux"):
            if isinstance(tuned.get(key), (int, float)):
                rec.worker_hyperparameters[key] = float(tuned[key])

    # --- the whole run
    def run(self) -> Path:
        rec = self.rec
        self.prepare()
        sup = Supervisor(rec.run_dir / "logs", env=self._child_env())
        try:
            with sup:
                self.score_priors(sup)
                self.replay(sup)
                bootstrap = self.start_broker(sup)
                if bootstrap:
                    rec.bootstrap = bootstrap
                    self.live_phase(sup, bootstrap)
        except KeyboardInterrupt:
            rec.interrupted = True
            self.console.print("[bold red]demo interrupted[/]: stopping every child process")
        finally:
            sup.stop_all()
            _write_pids(rec.run_dir / "pids.json", sup)
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


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def surviving_processes(run_id: str) -> list[int]:
    """Pids of live processes whose environment carries ``LOLA_DEMO_RUN=<run_id>`` (this one excluded)."""
    import psutil

    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(RUN_MARKER_ENV) == run_id and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def _write_pids(path: Path, sup: Supervisor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({name: sorted({c.popen.pid, *c.seen}) for name, c in sup.children.items()}), encoding="utf-8")


def _last_json_object(text: str) -> dict | None:
    """The JSON document a command printed (after any log lines)."""
    start = text.find("{")
    while start >= 0:
        try:
            doc = json.loads(text[start:])
            return doc if isinstance(doc, dict) else None
        except json.JSONDecodeError:
            start = text.find("\n{", start + 1)
            start = start + 1 if start >= 0 else -1
    return None


class _LiveView:
    """The rich view of the live phase."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self.sample: dict[str, Any] = {}
        self.stats: AllocationStats | None = None
        tests = demo.rec.tests
        self.uniform = sum(1 / len(t.headlines) for t in tests) / len(tests) if tests else float("nan")

    def line(self) -> str:
        s = self.sample
        eps = s.get("events_per_s")
        share = self.stats.best_share if self.stats else float("nan")
        return (f"t={s.get('t', 0):.0f}s events/s={eps if eps is None else round(eps)} lag={_fmt(s.get('lag'))} "
                f"decisions={_fmt(s.get('decisions'))} best-arm share={share:.1%}")

    def render(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        s = self.sample
        head = Table.grid(padding=(0, 3))
        for _ in range(5):
            head.add_column()
        eps = s.get("events_per_s")
        head.add_row(
            f"[b]elapsed[/] {s.get('t', 0):.0f} s",
            f"[b]events/s[/] {'—' if eps is None else f'{eps:,.0f}'}",
            f"[b]consumer lag[/] {_fmt(s.get('lag'))}",
            f"[b]decisions[/] {_fmt(s.get('decisions'))}",
            f"[b]dead letters[/] {_fmt(s.get('deadletters'))}",
        )
        table = Table(title="traffic share per headline (best archive CTR in bold)", expand=False)
        table.add_column("experiment")
        table.add_column("impr.", justify="right")
        table.add_column("share on best", justify="right")
        table.add_column("shares (true CTR)")
        if self.stats:
            rows = sorted(self.stats.per_test, key=lambda r: -r["impressions"])[:10]
            for r in rows:
                best = max(range(len(r["true_ctr"])), key=r["true_ctr"].__getitem__)
                cells = []
                for i, (sh, c) in enumerate(zip(r["shares"], r["true_ctr"])):
                    cell = f"{sh:.0%} ({c:.2%})"
                    cells.append(f"[bold green]{cell}[/]" if i == best else cell)
                table.add_row(_short_id(r["experiment_id"]), f"{r['impressions']:,}", f"{r['best_share']:.0%}", "  ".join(cells))
            budget = self.demo.opts.tau * sum(len(t.headlines) for t in self.demo.rec.tests)
            foot = (f"all {self.stats.experiments} experiments: {self.stats.best_share:.1%} of {self.stats.impressions:,} "
                    f"impressions on the best headline (uniform split: {self.uniform:.1%})\n"
                    f"{self.stats.impressions / budget:.0%} of the {budget:,}-impression horizon done")
        else:
            foot = "waiting for the first policy snapshot…"
        return Group(head, table, foot)


def _short_id(experiment_id: str) -> str:
    """``<run>-<test id>-<eyecatcher id>`` shown as ``…<last 8 of the test id>``."""
    m = re.search(r"([0-9a-f]{24})-[0-9a-f]{24}$", experiment_id)
    return f"…{m.group(1)[-8:]}" if m else experiment_id[-14:]


def _fmt(x: Any) -> str:
    return "—" if x is None else f"{x:,.0f}"


# ====================================================================== report


def _plot_clicks(rec: RunRecord, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars: list[tuple[str, float, float]] = []
    stats = rec.final_stats
    if stats and stats.impressions:
        bars.append(("worker (realised)", stats.realised_clicks_per_period, stats.realised_se))
        bars.append(("worker (expected)", stats.expected_clicks_per_period, 0.0))
    for row in _replay_rows(rec):
        bars.append((f"replay {row['policy']}", row["clicks_per_period"], row.get("std_err", 0.0) or 0.0))
    bars = [(n, v, e if math.isfinite(e) else 0.0) for n, v, e in bars if math.isfinite(v)]
    if not bars:
        return None
    refs = reference_clicks(rec.tests)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    names = [b[0] for b in bars]
    ax.bar(names, [b[1] for b in bars], yerr=[b[2] for b in bars], color=["#2a9d8f" if n.startswith("worker") else "#8d99ae" for n in names], capsize=3)
    for label, value, style in ((k, v, s) for (k, v), s in zip(refs.items(), ("--", ":"))):
        ax.axhline(value, color="k", linestyle=style, linewidth=1, label=f"{label}: {value:.4f}")
    lo = min([b[1] for b in bars] + list(refs.values()))
    hi = max([b[1] + b[2] for b in bars] + list(refs.values()))
    ax.set_ylim(lo - 0.15 * (hi - lo + 1e-9), hi + 0.15 * (hi - lo + 1e-9))
    ax.set_ylabel("clicks per test per period")
    ax.set_title(f"{len(rec.tests)} Upworthy tests, tau={rec.options.tau}")
    ax.legend(fontsize=7, loc="lower right")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_allocation(rec: RunRecord, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(h["t"], h["best_share"], h.get("impressions", 0)) for h in rec.history if isinstance(h.get("best_share"), float) and math.isfinite(h["best_share"])]
    if len(pts) < 2:
        return None
    uniform = sum(1 / len(t.headlines) for t in rec.tests) / len(rec.tests)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, color="#2a9d8f", label="worker: cumulative share on best headline")
    # Share in each interval between snapshots: where traffic goes now, not on average so far.
    inter = [(b[0], (b[1] * b[2] - a[1] * a[2]) / (b[2] - a[2])) for a, b in zip(pts, pts[1:]) if b[2] - a[2] >= 500]
    if inter:
        ax.plot([p[0] for p in inter], [p[1] for p in inter], linewidth=1, color="#e76f51", alpha=0.8,
                label="worker: share on best headline in each interval")
    ax.axhline(uniform, color="k", linestyle="--", linewidth=1, label=f"uniform split: {uniform:.1%}")
    ax.set_xlabel("seconds since demo start")
    ax.set_ylabel("share of impressions")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def calibration_table(rec: RunRecord) -> dict | None:
    """Predicted prior CTR vs archive CTR (and vs the demo's realised CTR) per headline."""
    import numpy as np

    if not rec.priors:
        return None
    pred, true = [], []
    for t in rec.tests:
        for h, c in zip(t.headlines, t.true_ctr):
            if h in rec.priors:
                pred.append(rec.priors[h])
                true.append(c)
    if len(pred) < 2:
        return None
    p, y = np.asarray(pred), np.asarray(true)
    ss_res = float(np.sum((y - p) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    out = {
        "headlines": len(p), "mae": float(np.mean(np.abs(y - p))), "r2": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "corr": float(np.corrcoef(p, y)[0, 1]) if p.std() > 0 and y.std() > 0 else float("nan"),
        "mean_pred": float(p.mean()), "mean_true": float(y.mean()), "pred": p, "true": y,
    }
    # Within-test ranking: does the prior put the best headline first?
    hits = n = 0
    for t in rec.tests:
        if all(h in rec.priors for h in t.headlines):
            n += 1
            hits += int(max(range(len(t.headlines)), key=lambda i: rec.priors[t.headlines[i]]) == t.best)
    out["top1"] = hits / n if n else float("nan")
    out["top1_tests"] = n
    # Realised CTR in this run (arms with >= 200 impressions).
    realised = []
    if rec.final_stats:
        by_exp = {r["experiment_id"]: r for r in rec.final_stats.per_test}
        for exp_id, (t, index) in match_experiments(rec.final_snapshot, rec.tests).items():
            for variant_id, i in index.items():
                arm = rec.final_snapshot[exp_id][variant_id]
                imps = float(arm.get("impressions", 0) or 0)
                if imps >= 200 and t.headlines[i] in rec.priors and exp_id in by_exp:
                    realised.append((rec.priors[t.headlines[i]], float(arm.get("clicks", 0) or 0) / imps))
    out["realised"] = realised
    return out


def _plot_calibration(cal: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    p, y = cal["pred"], cal["true"]
    fig, ax = plt.subplots(figsize=(5, 4.6))
    ax.scatter(p, y, s=10, alpha=0.5, color="#8d99ae", label="archive CTR per headline")
    if len(p) >= 10:  # binned means (deciles of the prediction)
        edges = np.quantile(p, np.linspace(0, 1, min(10, len(p) // 5) + 1))
        idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
        bx = [p[idx == k].mean() for k in range(len(edges) - 1) if np.any(idx == k)]
        by = [y[idx == k].mean() for k in range(len(edges) - 1) if np.any(idx == k)]
        ax.plot(bx, by, marker="s", color="#e76f51", label="binned mean (archive)")
    if cal["realised"]:
        rp, ry = zip(*cal["realised"])
        ax.scatter(rp, ry, s=14, marker="x", color="#2a9d8f", label="realised in this run (>=200 impr.)")
    lim = [0, float(max(p.max(), y.max()) * 1.05)]
    ax.plot(lim, lim, "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_xlabel("prior model's predicted CTR")
    ax.set_ylabel("realised CTR")
    ax.set_title(f"R²={cal['r2']:.3f}  MAE={cal['mae']:.4f}  n={cal['headlines']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _replay_rows(rec: RunRecord) -> list[dict]:
    if not rec.replay:
        return []
    rows = [r for r in rec.replay.get("results", []) if r.get("tau") == rec.options.tau]
    return [r for r in rows if r.get("policy") in REPLAY_POLICIES] or rows


def write_report(rec: RunRecord, path: Path) -> Path:
    """Write the Markdown report (and its PNGs beside it, under the run folder)."""
    opts = rec.options
    path.parent.mkdir(parents=True, exist_ok=True)
    rel = lambda p: os.path.relpath(p, path.parent)  # noqa: E731
    L: list[str] = [f"# lola demo report: {rec.run_id}", ""]
    status = "interrupted (Ctrl-C)" if rec.interrupted else ("complete" if not rec.skipped else "complete, with skipped steps")
    L += ["## Run", "",
          f"- started {rec.started_utc}, took {rec.timings.get('total', 0):.0f} s; status: **{status}**",
          f"- machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {sys.platform}",
          f"- data: `{opts.data}`, {len(rec.tests)} headline tests from the `{opts.split}` split (seed {opts.seed}), "
          f"{sum(len(t.headlines) for t in rec.tests)} headlines",
          f"- tau={opts.tau} (horizon tau x arms per test), duration limit {opts.duration_s:g} s, replay reps {opts.reps}",
          f"- prior model: `{opts.model}`" if opts.model else "- prior model: none",
          "- step times: " + ", ".join(f"{k} {v:.1f} s" for k, v in rec.timings.items()),
          f"- child processes started: {sum(1 for _ in _pid_list(rec))}; alive after cleanup: {len(rec.survivors)}", ""]
    for note in rec.notes:
        L.append(f"- note: {note}")
    L.append("")

    L += ["## Live run: the worker on the broker", ""]
    stats = rec.final_stats
    if stats and stats.impressions:
        eps = [h["events_per_s"] for h in rec.history if isinstance(h.get("events_per_s"), float)]
        lags = [h["lag"] for h in rec.history if isinstance(h.get("lag"), float)]
        L += [f"- broker `{rec.bootstrap}`; worker exit code {rec.worker_exit}, load generator exit code {rec.loadgen_exit}",
              f"- {stats.experiments} experiments, {stats.impressions:,} impressions, {stats.clicks:,} clicks in the final snapshot",
              f"- events/s: median {_median(eps):,.0f}, max {max(eps, default=float('nan')):,.0f} (from /metrics)" if eps else "- events/s: not exposed by /metrics",
              f"- consumer lag: max {max(lags):,.0f}, last {lags[-1]:,.0f}" if lags else "- consumer lag: not exposed by /metrics",
              *([f"- closed loop (load generator's view): {lg['impressions']:,} decisions in {lg['seconds']:.1f} s = "
                 f"{lg['decisions_per_s']:,.0f} decisions/s; request-to-decision latency p50 {lg['decision_latency_p50_ms']:.1f} ms, "
                 f"p99 {lg['decision_latency_p99_ms']:.1f} ms; {lg['clicks_earned']:,} clicks earned"]
                if (lg := rec.loadgen_summary) and all(k in lg for k in ("impressions", "seconds", "decisions_per_s",
                                                                          "decision_latency_p50_ms", "decision_latency_p99_ms",
                                                                          "clicks_earned")) else []),
              f"- share of impressions on each test's best headline (archive CTR): **{stats.best_share:.1%}** "
              f"(a uniform split would give {sum(1 / len(t.headlines) for t in rec.tests) / len(rec.tests):.1%})", ""]
        top = stats.per_test[:12]
        L += [f"The first {len(top)} of {len(stats.per_test)} tests (no selection): the share of impressions each headline got,",
              "and its archive CTR.", "",
              "| experiment | arms | impressions | share on best | shares | archive CTR |", "|---|---|---|---|---|---|"]
        for r in top:
            L.append(f"| `{_short_id(r['experiment_id'])}` | {r['arms']} | {r['impressions']:,} | {r['best_share']:.0%} | "
                     f"{' / '.join(f'{s:.0%}' for s in r['shares'])} | {' / '.join(f'{c:.2%}' for c in r['true_ctr'])} |")
        L.append("")
    else:
        L += ["No live results: see *Skipped or degraded*.", ""]

    L += ["## Clicks: worker vs offline replay", ""]
    refs = reference_clicks(rec.tests)
    L += ["Clicks per test per period, LOLA's Figure 7 score (total clicks / tau over a horizon of tau x K impressions),",
          "on the same tests. The worker's figures are per impression times K, so a run stopped before the horizon stays",
          "on the same scale. *Realised* is this run's Bernoulli clicks; *expected* is the impressions the worker gave each",
          "headline times that headline's archive CTR (the same allocation without click noise). Replay figures average",
          f"{opts.reps} repetitions of the offline simulation through the same kernels, hyperparameters tuned on tune-split tests.",
          "",
          "| who | clicks per period | ± s.e. |", "|---|---|---|"]
    if stats and stats.impressions:
        L.append(f"| worker, realised | {stats.realised_clicks_per_period:.5f} | {stats.realised_se:.5f} |")
        L.append(f"| worker, expected | {stats.expected_clicks_per_period:.5f} | |")
    for row in _replay_rows(rec):
        L.append(f"| replay {row['policy']} | {row['clicks_per_period']:.5f} | {_fmt_se(row)} |")
    for k, v in refs.items():
        L.append(f"| {k} | {v:.5f} | |")
    L.append("")
    if rec.worker_hyperparameters:
        L += ["The worker ran LOLA (LLM-2UCBs) with the replay's tuned " +
              ", ".join(f"{k}={v:g}" for k, v in rec.worker_hyperparameters.items()) + " and the model's priors.", ""]
    plots = rec.run_dir
    p = _plot_clicks(rec, plots / "clicks.png")
    if p:
        L += [f"![clicks per period]({rel(p)})", ""]

    L += ["## Allocation over time", ""]
    p = _plot_allocation(rec, plots / "allocation.png")
    L += ([f"![share on the best headline]({rel(p)})", ""] if p else ["Not enough policy snapshots were read during the run to plot.", ""])

    L += ["## Prior calibration", ""]
    cal = calibration_table(rec)
    if cal:
        p = _plot_calibration(cal, plots / "calibration.png")
        L += [f"- {cal['headlines']} headlines: R² {cal['r2']:.3f}, MAE {cal['mae']:.4f}, correlation {cal['corr']:.3f}; "
              f"mean predicted {cal['mean_pred']:.4f} vs mean archive CTR {cal['mean_true']:.4f}",
              f"- top-1: the prior ranks the best headline first in {cal['top1']:.0%} of {cal['top1_tests']} tests",
              f"- realised CTR in this run: {len(cal['realised'])} arms with >= 200 impressions (crosses in the plot)",
              "", f"![calibration]({rel(p)})", ""]
    else:
        L += ["No prior scores, so no calibration: see *Skipped or degraded*.", ""]

    L += ["## Skipped or degraded", ""]
    L += [f"- {s}" for s in rec.skipped] if rec.skipped else ["Nothing was skipped."]
    L.append("")
    cmd = ("lola demo" + (f" --model {opts.model}" if opts.model else "")
           + f" --tests {opts.tests} --tau {opts.tau} --duration {opts.duration_s:g} --reps {opts.reps} --seed {opts.seed}")
    L += ["## Reproduce", "", "```bash", cmd, "```", "",
          f"Logs of every child process: `{rel(rec.run_dir / 'logs')}`; raw snapshot and replay JSON beside them.", ""]
    path.write_text("\n".join(L), encoding="utf-8")
    (rec.run_dir / "summary.json").write_text(json.dumps(_summary(rec), indent=1, default=str), encoding="utf-8")
    return path


def _pid_list(rec: RunRecord) -> list[int]:
    path = rec.run_dir / "pids.json"
    if not path.is_file():
        return []
    return sorted({pid for pids in json.loads(path.read_text()).values() for pid in pids})


def _fmt_se(row: dict) -> str:
    for key in ("std_err", "se", "stderr"):
        if isinstance(row.get(key), (int, float)):
            return f"{row[key]:.5f}"
    return ""


def _median(xs: Sequence[float]) -> float:
    import numpy as np

    return float(np.median(xs)) if xs else float("nan")


def _summary(rec: RunRecord) -> dict:
    s = rec.final_stats
    return {
        "run_id": rec.run_id, "interrupted": rec.interrupted, "skipped": rec.skipped, "notes": rec.notes,
        "timings_s": rec.timings, "tests": len(rec.tests),
        "worker": None if not s else {k: getattr(s, k) for k in ("experiments", "impressions", "clicks", "best_share",
                                                                   "expected_clicks_per_period", "realised_clicks_per_period", "realised_se")},
        "replay": _replay_rows(rec), "reference": reference_clicks(rec.tests) if rec.tests else {},
    }


# ====================================================================== CLI


def register(app: typer.Typer) -> None:
    """Add ``lola demo`` to the root app."""

    @app.command("demo")
    def demo(
        model: Path = typer.Option(None, "--model", help="Prior model folder (model_card.json) (default: models/ctr-onnx if built)."),
        no_model: bool = typer.Option(False, "--no-model", help="Run without LLM priors even if a model is built."),
        data: Path = typer.Option(None, "--data", help="Upworthy package CSV (default: the shared dev CSV)."),
        tests: int = typer.Option(None, "--tests", help="Headline tests to run (default 100; --short: 6)."),
        tau: int = typer.Option(None, "--tau", help="Horizon per test = tau x arms impressions (default 500; --short: 20)."),
        duration: float = typer.Option(None, "--duration", help="Time limit of the live phase, seconds (default 480; --short: 40)."),
        reps: int = typer.Option(None, "--reps", help="Offline replay repetitions (default 10; --short: 2)."),
        seed: int = typer.Option(7, "--seed", help="Seed of test selection, load generator and replay."),
        out_dir: Path = typer.Option(Path("reports"), "--out-dir", help="Where demo-<timestamp>.md and its plots go."),
        bootstrap: str = typer.Option(None, "--bootstrap", help="Use this Kafka instead of starting the embedded broker."),
        split: str = typer.Option("test", "--split", help="Which split's tests to run (test = never seen by the prior model)."),
        short: bool = typer.Option(False, "--short", help="A quick run (about a minute) for tests and smoke checks."),
        no_live: bool = typer.Option(False, "--no-live", help="Plain progress lines instead of the live table."),
    ) -> None:
        """Run the main job: broker, worker and closed-loop load generator, then a report with plots."""
        from lola.paths import upworthy_csv

        base = dict(tests=DemoOptions.tests, tau=DemoOptions.tau, duration_s=DemoOptions.duration_s, reps=DemoOptions.reps)
        if short:
            base.update(SHORT)
        given = {"tests": tests, "tau": tau, "duration_s": duration, "reps": reps}
        base.update({k: v for k, v in given.items() if v is not None})
        if no_model:
            model = None
        elif model is None and (DEFAULT_MODEL_DIR / "model_card.json").is_file():
            model = DEFAULT_MODEL_DIR
        elif model is not None and not (model / "model_card.json").is_file():
            raise ConfigError(f"--model {model} has no model_card.json (build the default model with `make model`)")
        options = DemoOptions(model=model, data=data or upworthy_csv(), seed=seed, out_dir=out_dir,
                              bootstrap=bootstrap, split=split, live=not no_live, **base)
        report = Demo(options).run()
        typer.echo(str(report))
