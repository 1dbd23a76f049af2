"""`lola demo` pieces that need no broker: process cleanup, options, statistics, report.

The end-to-end demo on the real broker is in test_demo_e2e.py (marked broker, slow).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

import numpy as np

from lola.data.upworthy import HeadlineTest
from lola.demo import metrics
from lola.demo.options import RUN_MARKER_ENV, DemoOptions
from lola.demo.report import REPORT_SECTIONS, RunRecord, short_id, write_report
from lola.demo.selection import select_tests, write_tests_csv
from lola.demo.stats import AllocationStats, allocation_stats, match_experiments, p_best_of_best, reference_clicks
from lola.demo.supervisor import Supervisor, surviving_processes
from lola.errors import ConfigError
from lola.stream.loadgen import experiment_id

ROOT = Path(__file__).resolve().parents[2]

# A child that starts a grandchild in its own group and one in a new session
# (out of reach of killpg), prints their pids, and ignores SIGTERM: the worst case.
STUBBORN_CHILD = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    a = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    b = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    print(os.getpid(), a.pid, b.pid, flush=True)
    time.sleep(300)
    """
)


def _wait_gone(pids, timeout=10.0):
    end = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < end:
        for pid in list(alive):
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    alive.discard(pid)
            except psutil.NoSuchProcess:
                alive.discard(pid)
        time.sleep(0.1)
    return alive


def _read_pids(log: Path, timeout=20.0) -> list[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = log.read_text() if log.is_file() else ""
        if text.strip():
            return [int(x) for x in text.split()]
        time.sleep(0.05)
    raise AssertionError(f"child wrote no pids to {log}")


def test_supervisor_kills_stubborn_children_and_grandchildren(tmp_path):
    sup = Supervisor(tmp_path, grace_s=1.0)
    with sup:
        sup.spawn("stubborn", [sys.executable, "-c", STUBBORN_CHILD])
        pids = _read_pids(tmp_path / "stubborn.log")
        sup.note_descendants()
        assert all(psutil.pid_exists(p) for p in pids)
    assert not _wait_gone(pids), "a child or grandchild survived the supervisor"


def test_ctrl_c_leaves_no_process_behind(tmp_path):
    """SIGINT to a process running a Supervisor: it exits, and nothing carrying its run marker survives."""
    run_id = f"test-{os.getpid()}-{time.time_ns()}"
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from lola.demo.supervisor import Supervisor
        os.environ[{RUN_MARKER_ENV!r}] = {run_id!r}
        log_dir = Path({str(tmp_path)!r})
        with Supervisor(log_dir, grace_s=1.0) as sup:
            sup.spawn("a", [sys.executable, "-c", {STUBBORN_CHILD!r}])
            sup.spawn("b", [sys.executable, "-c", "import time; time.sleep(300)"])
            (log_dir / "ready").write_text("1")
            time.sleep(300)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        end = time.monotonic() + 30
        while not (tmp_path / "ready").exists():
            assert time.monotonic() < end and proc.poll() is None, "supervisor script did not start"
            time.sleep(0.05)
        pids = _read_pids(tmp_path / "a.log")
        assert len(surviving_processes(run_id)) >= 4  # a, its two grandchildren, b
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0  # KeyboardInterrupt propagated after cleanup
    assert not _wait_gone(pids)
    assert surviving_processes(run_id) == []


RUN = "demo-x"


def _test(test_id, eyecatcher_id, headlines, ctrs):
    impressions = np.full(len(ctrs), 100_000.0)
    return HeadlineTest(test_id, eyecatcher_id, headlines, impressions, np.asarray(ctrs) * impressions)


def _tests():
    return [
        _test("t1", "e1", ("a", "b"), (0.01, 0.03)),
        _test("t2", "e2", ("c", "d", "e"), (0.02, 0.01, 0.015)),
    ]


def _id(test):
    return experiment_id(RUN, test)


def test_allocation_stats_against_truth():
    t1, t2 = _tests()
    snap = {
        _id(t1): {"h0": {"impressions": 100, "clicks": 1}, "h1": {"impressions": 300, "clicks": 9}},
        _id(t2): {"h0": {"impressions": 50, "clicks": 1}, "h1": {"impressions": 25, "clicks": 0},
                  "h2": {"impressions": 25, "clicks": 1}},
        "unknown": {"h0": {"impressions": 999, "clicks": 99}},
    }
    stats = allocation_stats(snap, _tests(), RUN)
    assert stats.experiments == 2 and stats.impressions == 500 and stats.clicks == 12
    assert stats.best_share == pytest.approx((300 + 50) / 500)
    # Clicks per period = K x clicks per impression (= clicks / tau at the full horizon tau*K).
    exp1 = 2 * (100 * 0.01 + 300 * 0.03) / 400
    exp2 = 3 * (50 * 0.02 + 25 * 0.01 + 25 * 0.015) / 100
    assert stats.expected_clicks_per_period == pytest.approx((exp1 + exp2) / 2)
    assert stats.realised_clicks_per_period == pytest.approx((2 * 10 / 400 + 3 * 2 / 100) / 2)


def test_only_this_runs_experiment_ids_and_variant_ids_match():
    t1, _ = _tests()
    snap = {_id(t1): {"h1": {"impressions": 1}, "x": {"impressions": 1}},
            experiment_id("another-run", t1): {"h0": {"impressions": 5}}, "t1-e1": {"h0": {"impressions": 5}}}
    matched = match_experiments(snap, _tests(), RUN)
    assert list(matched) == [_id(t1)]
    assert matched[_id(t1)][1] == {"h1": 1}
    assert short_id(_id(t1)) == "…t1"


def test_p_best_of_the_best_headline_from_snapshot_stats():
    t1, t2 = _tests()
    arm = {"p_best": 0.9, "p_best_with_prior": 0.95}
    snaps = {_id(t1): {"stats": {"arms": {"h1": arm, "h0": {"p_best": 0.1, "p_best_with_prior": 0.05}}}},
             _id(t2): {"arms": {}}}  # a snapshot without stats (an older worker) is left out
    assert p_best_of_best(snaps, _tests(), RUN) == {"p_best_of_best": 0.9, "p_best_of_best_with_prior": 0.95}
    assert p_best_of_best({}, _tests(), RUN) == {}


def test_reference_clicks_uniform_and_oracle():
    ref = reference_clicks(_tests())
    assert ref["uniform (A/B split)"] == pytest.approx((0.04 + 0.045) / 2)
    assert ref["oracle (best headline always)"] == pytest.approx((2 * 0.03 + 3 * 0.02) / 2)


def test_live_metric_names_are_the_workers():
    from lola.stream.observability import WorkerMetrics

    names = set()
    for family in WorkerMetrics().registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    assert set(metrics.LIVE_METRICS) <= names, set(metrics.LIVE_METRICS) - names


def test_select_tests_is_seeded_and_from_the_asked_split(upworthy_csv, tmp_path):
    from lola.data.upworthy import load_packages, split_of_tests

    a = select_tests(upworthy_csv, 5, seed=3, split="test")
    b = select_tests(upworthy_csv, 5, seed=3, split="test")
    assert [(t.test_id, t.eyecatcher_id) for t in a] == [(t.test_id, t.eyecatcher_id) for t in b] and len(a) == 5
    packages, _ = load_packages(upworthy_csv)
    split = split_of_tests(packages)
    assert {split[t.test_id] for t in a} == {"test"}
    out = write_tests_csv(upworthy_csv, a, tmp_path / "tests.csv")
    again = select_tests(out, 5, seed=0, split="test")
    assert {(t.test_id, t.eyecatcher_id) for t in again} == {(t.test_id, t.eyecatcher_id) for t in a}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tests": 0}, "--tests"),
        ({"tau": 0}, "--tau"),
        ({"duration_s": 1}, "--duration"),
        ({"reps": 0}, "--reps"),
        ({"split": "dev"}, "--split"),
        ({"bootstrap": "nohostport"}, "--bootstrap"),
        ({"data": Path("/no/such.csv")}, "--data"),
    ],
)
def test_bad_options_are_config_errors(kwargs, message, upworthy_csv):
    base = {"model": None, "data": upworthy_csv}
    with pytest.raises(ConfigError, match=message):
        DemoOptions(**{**base, **kwargs})


def test_bad_cli_argument_is_one_line():
    out = subprocess.run([sys.executable, "-m", "lola.cli", "demo", "--tau", "0"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.strip() == "lola: error: --tau must be in 1..100000, got 0"


def test_report_has_every_section_and_plots(tmp_path, upworthy_csv):
    opts = DemoOptions(model=None, data=upworthy_csv, tests=2, tau=10, duration_s=10, reps=1, out_dir=tmp_path)
    rec = RunRecord(RUN, tmp_path / "demo-x", opts)
    rec.run_dir.mkdir()
    rec.tests = _tests()
    rec.priors = {"a": 0.012, "b": 0.025, "c": 0.02, "d": 0.012, "e": 0.014}
    rec.final_snapshot = {_id(rec.tests[0]): {"h0": {"impressions": 300, "clicks": 3},
                                              "h1": {"impressions": 900, "clicks": 27}}}
    rec.final_stats = allocation_stats(rec.final_snapshot, rec.tests, RUN)
    rec.history = [{"t": 1.0, "best_share": 0.5, "events_per_s": 100.0, "lag": 3.0,
                    "p_best_of_best": 0.5, "p_best_of_best_with_prior": 0.6},
                   {"t": 2.0, "best_share": 0.7, "events_per_s": 120.0, "lag": 0.0,
                    "p_best_of_best": 0.8, "p_best_of_best_with_prior": 0.9}]
    rec.replay = {"results": [{"tau": 10, "policy": "UCB", "clicks_per_period": 0.02},
                              {"tau": 10, "policy": "LOLA", "clicks_per_period": 0.021},
                              {"tau": 50, "policy": "UCB", "clicks_per_period": 0.5}]}
    rec.skip("something", "because")
    path = write_report(rec, tmp_path / "demo-x.md")
    text = path.read_text()
    positions = [text.index(section) for section in REPORT_SECTIONS]
    assert positions == sorted(positions)
    assert "| replay LOLA | 0.02100 |" in text and "0.5" not in text.split("## Clicks")[1].split("##")[0].split("| replay")[-1]
    assert "- something: because" in text
    for png in ("clicks.png", "allocation.png", "p_best.png", "calibration.png"):
        assert (rec.run_dir / png).stat().st_size > 1000
        assert f"demo-x/{png}" in text
    assert isinstance(rec.final_stats, AllocationStats) and rec.final_stats.best_share == pytest.approx(0.75)


def test_missing_model_card_is_a_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lola.cli", "demo", "--model", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.startswith("lola: error: --model") and out.stderr.count("\n") == 1
