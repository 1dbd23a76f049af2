"""`lola demo` end to end: a real Tansu broker, worker and load generator as child processes.

Uses the prior model in models/ctr-onnx when `make model` has built it (then the replay
and calibration run too); without it the demo runs without LLM priors and its report
says so. Either way: the report has every section, the worker's final snapshot counts
every impression the load generator sent, and no process started by the demo survives
(found by the LOLA_DEMO_RUN marker every child inherits).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from lola.demo.options import RUN_MARKER_ENV
from lola.demo.report import REPORT_SECTIONS

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "ctr-onnx"


def _marked_processes(demo_pid: int) -> list[int]:
    """Live processes whose demo run id (``demo-<stamp>-<pid>``) names this demo process."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            marker = proc.environ().get(RUN_MARKER_ENV, "")
            if marker.endswith(f"-{demo_pid}") and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def _demo_argv(out_dir: Path, *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "lola.cli", "demo", "--short", "--no-live", "--out-dir", str(out_dir), *extra]
    argv += ["--model", str(MODEL)] if (MODEL / "model_card.json").is_file() else ["--no-model"]
    return argv


def test_short_demo_writes_a_complete_report_and_leaves_nothing(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.monotonic()
    proc = subprocess.Popen(_demo_argv(tmp_path), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, err[-2000:]
    assert elapsed < 90
    assert _marked_processes(proc.pid) == []

    (report,) = tmp_path.glob("demo-*.md")
    assert out.strip().endswith(report.name)
    text = report.read_text()
    positions = [text.index(section) for section in REPORT_SECTIONS]
    assert positions == sorted(positions)
    assert "alive after cleanup: 0" in text

    run_dir = report.with_suffix("")
    summary = json.loads((run_dir / "summary.json").read_text())
    loadgen = json.loads((run_dir / "loadgen.json").read_text())
    # --short: 6 tests at tau=20, so 20 x K impressions each; the worker's snapshot counts them all.
    assert summary["tests"] == 6
    assert summary["worker"]["experiments"] == 6
    assert summary["worker"]["impressions"] == loadgen["impressions"] > 0
    assert summary["worker"]["clicks"] == loadgen["clicks_earned"]
    pids = json.loads((run_dir / "pids.json").read_text())
    assert {"broker", "worker", "loadgen"} <= set(pids)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for group in pids.values() for p in group)
    if (MODEL / "model_card.json").is_file():
        assert {r["policy"] for r in summary["replay"]} == {"E&C", "UCB", "LOLA"}
        assert (run_dir / "calibration.png").is_file() and (run_dir / "clicks.png").is_file()
    else:
        assert "prior model" in text.split("## Skipped or degraded")[1]


def test_ctrl_c_mid_run_stops_every_child(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(_demo_argv(tmp_path, "--duration", "60", "--tau", "2000"), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 75
        # Wait for the live phase: the load generator has started (so broker and worker run too).
        while not list(tmp_path.glob("demo-*/logs/loadgen.log")):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the demo never reached the live phase"
            time.sleep(0.2)
        time.sleep(2.0)
        running = _marked_processes(proc.pid)
        assert len(running) >= 3, running  # tansu, worker, load generator at least
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]  # the conventional exit code after SIGINT
    end = time.monotonic() + 10
    while _marked_processes(proc.pid) and time.monotonic() < end:
        time.sleep(0.2)
    assert _marked_processes(proc.pid) == []
    (report,) = tmp_path.glob("demo-*.md")
    assert "interrupted (Ctrl-C)" in report.read_text()
