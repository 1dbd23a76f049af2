"""lola report: its numbers, its two files, and the HTML page in a real headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path
import shutil
import subprocess

import numpy as np
import pytest
from matplotlib.image import imread

from lola.report.render import write
from lola.report.summary import calibration, summarise
from lola.stream.stats import experiment_stats

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(loop_data, tmp_path_factory):
    log, snaps = loop_data
    summary = summarise(log, snaps, None, 8)
    out = tmp_path_factory.mktemp("report")
    return summary, write(summary, out), log


def test_timelines_end_at_the_logged_counts(report):
    summary, _, log = report
    tl = summary["timelines"][0]
    assert all(abs(sum(s) - 1) < 1e-12 for s in tl["share"] if sum(s))
    mask = np.array([e == tl["experiment"] for e in log.experiment])
    k = len(tl["variants"])
    imp = np.bincount(log.action[mask], minlength=k).astype(float)
    clk = np.bincount(log.action[mask], weights=log.reward[mask], minlength=k)
    st = experiment_stats(tl["variants"], imp, clk, np.zeros(k), np.zeros(k, bool), np.ones(k, bool), 0.0)
    assert tl["p_best"][-1] == pytest.approx([st["arms"][v]["p_best"] for v in tl["variants"]], abs=1e-12)
    for x in summary["experiments"].values():
        assert 0 <= x["prior_traffic_moved"] <= 1 and 0 <= x["prior_share"] <= 1


def test_calibration_slope_is_weighted_least_squares():
    snaps = {f"e{i}": {"arms": {"a": {"prior": p, "impressions": n, "clicks": c}}}
             for i, (p, n, c) in enumerate([(0.01, 1000, 12), (0.05, 2000, 80), (0.1, 500, 60), (0.2, 100, 15)])}
    got = calibration(snaps)
    x, y, w = np.array([0.01, 0.05, 0.1, 0.2]), np.array([0.012, 0.04, 0.12, 0.15]), np.array([1000, 2000, 500, 100.0])
    slope = np.polyfit(x, y, 1, w=np.sqrt(w))[0]
    assert got["slope"] == pytest.approx(slope, rel=1e-10)
    assert sum(b["arms"] for b in got["bins"]) == 4


def test_files_are_written_and_the_page_is_self_contained(report):
    summary, files, _ = report
    md = files["markdown"].read_text()
    for name in re.findall(r"\]\((\w+\.png)\)", md):
        assert (files["markdown"].parent / name).stat().st_size > 1000
    page = files["html"].read_text()
    assert page.count("data:image/png;base64,") >= 5
    assert not re.search(r"(src|href)=\"(?!data:)", page), "every asset is inlined"
    assert "http://" not in page and "https://" not in page


def _chromium(page, shot):
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          "--window-size=1000,1400", f"--screenshot={shot}", "--enable-logging=stderr", "--v=0",
                          page.as_uri()], capture_output=True, text=True, timeout=120)
    return [line for line in out.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install -y chromium)")
def test_the_page_in_headless_chromium(report, tmp_path):
    _, files, _ = report
    shot = tmp_path / "shot.png"
    assert _chromium(files["html"], shot) == []
    img = imread(shot)[..., :3]
    non_white = (img < 0.95).any(axis=2).mean()
    colours = len(np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert non_white > 0.01 and colours > 50, f"screenshot nearly blank ({non_white:.3f} non-white, {colours} colours)"
    # the console check has teeth: a page that logs an error is caught
    bad = tmp_path / "bad.html"
    bad.write_text(files["html"].read_text().replace("</body>", "<script>console.error('x')</script></body>"))
    assert len(_chromium(bad, tmp_path / "bad.png")) == 1


OBD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "obd" / "random" / "all"


@pytest.mark.skipif(not OBD.is_dir(), reason=f"{OBD} not found")
def test_report_on_an_open_bandit_dataset_log(tmp_path):
    from lola.report.cli import build

    summary = build(None, tmp_path, None, 4, 10, obd=str(OBD))
    assert summary["health"]["joined"] == 10_000 and summary["experiments"] == {}
    tl = summary["timelines"][0]
    assert len(tl["variants"]) == 80 and len(tl["p_best"]) == 4
    assert (tmp_path / "report.html").stat().st_size > 10_000
