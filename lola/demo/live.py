"""The live view of the demo's live phase: one metrics sample a second, a rich table or plain lines."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.table import Table

from lola.demo import metrics
from lola.demo.report import short_id
from lola.demo.stats import AllocationStats


class MetricsSampler:
    """Reads the worker's /metrics; events/s from the worker's gauge, else from the counter's slope."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._last: tuple[float, float] | None = None  # (records, monotonic time)

    def sample(self, elapsed_s: float) -> dict[str, Any]:
        out: dict[str, Any] = {"t": round(elapsed_s, 2)}
        try:
            m = metrics.scrape(self.url)
        except OSError:
            return out
        now = time.monotonic()
        records = m.get(metrics.RECORDS)
        out.update(events=records, lag=m.get(metrics.LAG), decisions=m.get(metrics.DECISIONS),
                   deadletters=m.get(metrics.DEAD_LETTERS))
        rate = m.get(metrics.RECORDS_PER_S)
        if rate is None and records is not None and self._last is not None and now > self._last[1]:
            rate = (records - self._last[0]) / (now - self._last[1])
        if rate is not None:
            out["events_per_s"] = float(rate)
        if records is not None:
            self._last = (records, now)
        return out


def _fmt(x: Any) -> str:
    return "—" if x is None else f"{x:,.0f}"


class LiveView:
    """What the live phase shows: the latest metrics sample and allocation statistics."""

    def __init__(self, uniform_share: float, horizon: int) -> None:
        self.uniform = uniform_share
        self.horizon = horizon  # impressions of the whole run: tau x arms, summed over tests
        self.sample: dict[str, Any] = {}
        self.stats: AllocationStats | None = None

    def line(self) -> str:
        s = self.sample
        eps = s.get("events_per_s")
        share = self.stats.best_share if self.stats else float("nan")
        return (f"t={s.get('t', 0):.0f}s events/s={_fmt(eps)} lag={_fmt(s.get('lag'))} "
                f"decisions={_fmt(s.get('decisions'))} best-arm share={share:.1%}")

    def render(self) -> Group:
        s = self.sample
        head = Table.grid(padding=(0, 3))
        for _ in range(5):
            head.add_column()
        head.add_row(
            f"[b]elapsed[/] {s.get('t', 0):.0f} s",
            f"[b]events/s[/] {_fmt(s.get('events_per_s'))}",
            f"[b]consumer lag[/] {_fmt(s.get('lag'))}",
            f"[b]decisions[/] {_fmt(s.get('decisions'))}",
            f"[b]dead letters[/] {_fmt(s.get('deadletters'))}",
        )
        table = Table(title="traffic share per headline (best archive CTR in bold)", expand=False)
        table.add_column("experiment")
        table.add_column("impr.", justify="right")
        table.add_column("share on best", justify="right")
        table.add_column("shares (true CTR)")
        if not self.stats:
            return Group(head, table, "waiting for the first policy snapshot…")
        for r in sorted(self.stats.per_test, key=lambda r: -r["impressions"])[:10]:
            best = max(range(len(r["true_ctr"])), key=r["true_ctr"].__getitem__)
            cells = [f"{sh:.0%} ({c:.2%})" for sh, c in zip(r["shares"], r["true_ctr"])]
            cells[best] = f"[bold green]{cells[best]}[/]"
            table.add_row(short_id(r["experiment_id"]), f"{r['impressions']:,}", f"{r['best_share']:.0%}", "  ".join(cells))
        foot = (f"all {self.stats.experiments} experiments: {self.stats.best_share:.1%} of {self.stats.impressions:,} "
                f"impressions on the best headline (uniform split: {self.uniform:.1%})\n"
                f"{self.stats.impressions / max(self.horizon, 1):.0%} of the {self.horizon:,}-impression horizon done")
        return Group(head, table, foot)
