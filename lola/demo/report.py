"""The demo's Markdown report (``reports/demo-<timestamp>.md``) and its run record."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from lola.data.upworthy import HeadlineTest
from lola.demo import plots
from lola.demo.options import REPLAY_POLICIES, DemoOptions
from lola.demo.stats import AllocationStats, calibration_table, reference_clicks, uniform_share

REPORT_SECTIONS = (
    "## Run",
    "## Live run: the worker on the broker",
    "## Clicks: worker vs offline replay",
    "## Allocation over time",
    "## P(best) over time",
    "## Prior calibration",
    "## Skipped or degraded",
    "## Reproduce",
)


@dataclass
class RunRecord:
    """Everything the report needs; filled step by step."""

    run_id: str
    run_dir: Path
    options: DemoOptions
    started: float = field(default_factory=time.monotonic)
    started_utc: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))
    tests: list[HeadlineTest] = field(default_factory=list)
    tune_tests: list[HeadlineTest] = field(default_factory=list)
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
    survivors: list[int] = field(default_factory=list)

    def skip(self, what: str, why: str) -> None:
        self.skipped.append(f"{what}: {why}")

    def note(self, text: str) -> None:
        """A remark for the report (at most 20, so a flapping read cannot flood it)."""
        if len(self.notes) < 20:
            self.notes.append(text)

    def replay_rows(self) -> list[dict]:
        """The replay's rows at the run's tau, for the policies the demo compares."""
        rows = [r for r in (self.replay or {}).get("results", []) if r.get("tau") == self.options.tau]
        return [r for r in rows if r.get("policy") in REPLAY_POLICIES] or rows


def _pid_count(rec: RunRecord) -> int:
    path = rec.run_dir / "pids.json"
    if not path.is_file():
        return 0
    return len({pid for pids in json.loads(path.read_text()).values() for pid in pids})


def _live_section(rec: RunRecord) -> list[str]:
    stats = rec.final_stats
    if not (stats and stats.impressions):
        return ["No live results: see *Skipped or degraded*.", ""]
    eps = [h["events_per_s"] for h in rec.history if isinstance(h.get("events_per_s"), float)]
    lags = [h["lag"] for h in rec.history if isinstance(h.get("lag"), float)]
    lg = rec.loadgen_summary or {}
    lines = [f"- broker `{rec.bootstrap}`; worker exit code {rec.worker_exit}, load generator exit code {rec.loadgen_exit}",
             f"- {stats.experiments} experiments, {stats.impressions:,} impressions, {stats.clicks:,} clicks in the final snapshot",
             f"- events/s: median {float(np.median(eps)):,.0f}, max {max(eps):,.0f} (from /metrics)" if eps
             else "- events/s: no sample read from /metrics",
             f"- consumer lag: max {max(lags):,.0f}, last {lags[-1]:,.0f}" if lags else "- consumer lag: no sample read from /metrics"]
    if "decisions_per_s" in lg:  # the closed loop's own summary (lola loadgen closed --out)
        lines.append(f"- closed loop (load generator's view): {lg['impressions']:,} decisions in {lg['seconds']:.1f} s = "
                     f"{lg['decisions_per_s']:,.0f} decisions/s; request-to-decision latency p50 "
                     f"{lg['decision_latency_p50_ms']:.1f} ms, p99 {lg['decision_latency_p99_ms']:.1f} ms; "
                     f"{lg['clicks_earned']:,} clicks earned")
    lines += [f"- share of impressions on each test's best headline (archive CTR): **{stats.best_share:.1%}** "
              f"(a uniform split would give {uniform_share(rec.tests):.1%})", ""]
    top = stats.per_test[:12]
    lines += [f"The first {len(top)} of {len(stats.per_test)} tests (no selection): the share of impressions each headline got,",
              "and its archive CTR.", "",
              "| experiment | arms | impressions | share on best | shares | archive CTR |", "|---|---|---|---|---|---|"]
    for r in top:
        lines.append(f"| `{short_id(r['experiment_id'])}` | {r['arms']} | {r['impressions']:,} | {r['best_share']:.0%} | "
                     f"{' / '.join(f'{s:.0%}' for s in r['shares'])} | {' / '.join(f'{c:.2%}' for c in r['true_ctr'])} |")
    return lines + [""]


def _clicks_section(rec: RunRecord, rel) -> list[str]:
    opts, stats = rec.options, rec.final_stats
    refs = reference_clicks(rec.tests)
    lines = ["Clicks per test per period, LOLA's Figure 7 score (total clicks / tau over a horizon of tau x K impressions),",
             "on the same tests. The worker's figures are per impression times K, so a run stopped before the horizon stays",
             "on the same scale. *Realised* is this run's Bernoulli clicks; *expected* is the impressions the worker gave each",
             "headline times that headline's archive CTR (the same allocation without click noise). Replay figures average",
             f"{opts.reps} repetitions of the offline simulation through the same kernels, hyperparameters tuned on tune-split tests.",
             "", "| who | clicks per period | ± s.e. |", "|---|---|---|"]
    if stats and stats.impressions:
        lines.append(f"| worker, realised | {stats.realised_clicks_per_period:.5f} | {stats.realised_se:.5f} |")
        lines.append(f"| worker, expected | {stats.expected_clicks_per_period:.5f} | |")
    for row in rec.replay_rows():
        se = row.get("std_err")
        lines.append(f"| replay {row['policy']} | {row['clicks_per_period']:.5f} | {'' if se is None else f'{se:.5f}'} |")
    lines += [f"| {k} | {v:.5f} | |" for k, v in refs.items()] + [""]
    if rec.worker_hyperparameters:
        lines += ["The worker ran LOLA (LLM-2UCBs) with the replay's tuned " +
                  ", ".join(f"{k}={v:g}" for k, v in rec.worker_hyperparameters.items()) + " and the model's priors.", ""]
    p = plots.plot_clicks(stats, rec.replay_rows(), refs, f"{len(rec.tests)} Upworthy tests, tau={opts.tau}",
                          rec.run_dir / "clicks.png")
    return lines + ([f"![clicks per period]({rel(p)})", ""] if p else [])


def _calibration_section(rec: RunRecord, rel) -> list[str]:
    cal = calibration_table(rec.priors, rec.tests, rec.final_snapshot, rec.run_id)
    if not cal:
        return ["No prior scores, so no calibration: see *Skipped or degraded*.", ""]
    p = plots.plot_calibration(cal, rec.run_dir / "calibration.png")
    return [f"- {cal['headlines']} headlines: R² {cal['r2']:.3f}, MAE {cal['mae']:.4f}, correlation {cal['corr']:.3f}; "
            f"mean predicted {cal['mean_pred']:.4f} vs mean archive CTR {cal['mean_true']:.4f}",
            f"- top-1: the prior ranks the best headline first in {cal['top1']:.0%} of {cal['top1_tests']} tests "
            "(a tie for first counts the share of tied headlines that are best)",
            f"- realised CTR in this run: {len(cal['realised'])} arms with >= 200 impressions (crosses in the plot)",
            "", f"![calibration]({rel(p)})", ""]


def write_report(rec: RunRecord, path: Path) -> Path:
    """Write the Markdown report (and its PNGs beside it, under the run folder) and ``summary.json``."""
    opts = rec.options
    path.parent.mkdir(parents=True, exist_ok=True)
    rec.run_dir.mkdir(parents=True, exist_ok=True)

    def rel(p: Path) -> str:
        return os.path.relpath(p, path.parent)

    status = "interrupted (Ctrl-C)" if rec.interrupted else ("complete" if not rec.skipped else "complete, with skipped steps")
    lines = [f"# lola demo report: {rec.run_id}", "", "## Run", "",
             f"- started {rec.started_utc}, took {rec.timings.get('total', 0):.0f} s; status: **{status}**",
             f"- machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {sys.platform}",
             f"- data: `{opts.data}`, {len(rec.tests)} headline tests from the `{opts.split}` split (seed {opts.seed}), "
             f"{sum(t.n_arms for t in rec.tests)} headlines",
             f"- tau={opts.tau} (horizon tau x arms per test), duration limit {opts.duration_s:g} s, replay reps {opts.reps}",
             f"- prior model: `{opts.model}`" if opts.model else "- prior model: none",
             "- step times: " + ", ".join(f"{k} {v:.1f} s" for k, v in rec.timings.items()),
             f"- child processes started: {_pid_count(rec)}; alive after cleanup: {len(rec.survivors)}", ""]
    lines += [f"- note: {note}" for note in rec.notes] + [""]
    lines += ["## Live run: the worker on the broker", ""] + _live_section(rec)
    lines += ["## Clicks: worker vs offline replay", ""] + _clicks_section(rec, rel)
    lines += ["## Allocation over time", ""]
    p = plots.plot_allocation(rec.history, uniform_share(rec.tests), rec.run_dir / "allocation.png")
    lines += [f"![share on the best headline]({rel(p)})", ""] if p else ["Not enough policy snapshots were read during the run to plot.", ""]
    lines += ["## P(best) over time", ""]
    p = plots.plot_p_best(rec.history, uniform_share(rec.tests), rec.run_dir / "p_best.png")
    lines += (["Mean over the tests of the P(best) that the worker's snapshot statistics give each test's archive-best "
               "headline (docs/reports.md): from the data alone, and with the LLM prior as n_aux pseudo-impressions.",
               "", f"![P(best) of the best headline]({rel(p)})", ""] if p else
              ["Not enough policy snapshots with statistics were read during the run to plot.", ""])
    lines += ["## Prior calibration", ""] + _calibration_section(rec, rel)
    lines += ["## Skipped or degraded", ""] + ([f"- {s}" for s in rec.skipped] or ["Nothing was skipped."]) + [""]
    cmd = ("lola demo" + (f" --model {opts.model}" if opts.model else "")
           + f" --tests {opts.tests} --tau {opts.tau} --duration {opts.duration_s:g} --reps {opts.reps} --seed {opts.seed}")
    lines += ["## Reproduce", "", "```bash", cmd, "```", "",
              f"Logs of every child process: `{rel(rec.run_dir / 'logs')}`; raw snapshot and replay JSON beside them.", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    (rec.run_dir / "summary.json").write_text(json.dumps(_summary(rec), indent=1, default=str), encoding="utf-8")
    return path


def short_id(experiment_id: str) -> str:
    """``<run>-<test id>-<eyecatcher id>`` shown as ``…<last 8 characters of the test id>``."""
    parts = experiment_id.rsplit("-", 2)
    return f"…{parts[1][-8:]}" if len(parts) == 3 else experiment_id[-14:]


def _summary(rec: RunRecord) -> dict:
    s = rec.final_stats
    fields = ("experiments", "impressions", "clicks", "best_share", "expected_clicks_per_period",
              "realised_clicks_per_period", "realised_se")
    return {
        "run_id": rec.run_id, "interrupted": rec.interrupted, "skipped": rec.skipped, "notes": rec.notes,
        "timings_s": rec.timings, "tests": len(rec.tests),
        "worker": None if not s else {k: getattr(s, k) for k in fields},
        "replay": rec.replay_rows(), "reference": reference_clicks(rec.tests) if rec.tests else {},
    }
