"""Figures (matplotlib, Agg) and the two report files: Markdown beside its PNGs, and one
self-contained HTML page (PNGs inlined as base64, no scripts, no external assets)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)


#: Variants drawn per over-time panel (the busiest).
MAX_LINES = 8


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _over_time(timelines: list[dict], key: str, ylabel: str, title: str) -> bytes:
    fig, axes = plt.subplots(len(timelines), 1, figsize=(7, 2.4 * len(timelines)), squeeze=False, layout="constrained")
    for ax, tl in zip(axes[:, 0], timelines):
        rows = list(zip(*tl[key]))
        # at most MAX_LINES variants: the most traffic, or the largest P(best) now (an OBD campaign has 80 items)
        rank = (lambda i: -tl["p_best"][-1][i]) if key == "p_best" else (lambda i: -sum(s[i] for s in tl["share"]))
        drawn = sorted(range(len(rows)), key=rank)[:MAX_LINES]
        for i in drawn:
            ax.plot(tl["t"], rows[i], marker=".", label=tl["variants"][i])
            if key == "p_best":
                ax.plot(tl["t"], [r[i] for r in tl["p_best_with_prior"]], ls=":", color=ax.lines[-1].get_color())
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{tl['experiment']} ({tl['decisions']} decisions)", fontsize=9)
        ax.legend(fontsize=7, ncol=min(len(drawn), 6), loc="upper left")
    axes[-1, 0].set_xlabel("seconds since the first decision")
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def _posteriors(experiments: dict[str, dict]) -> bytes:
    names = list(experiments)[:12]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.35 * sum(len(experiments[e]["stats"]["arms"]) for e in names)))
    y = 0
    ticks, labels = [], []
    for e in names:
        for v, a in experiments[e]["stats"]["arms"].items():
            for off, key, color in ((0.12, "posterior", "C0"), (-0.12, "posterior_with_prior", "C1")):
                p = a[key]
                ax.errorbar(p["mean"], y + off, xerr=[[p["mean"] - p["ci"][0]], [p["ci"][1] - p["mean"]]],
                            fmt="o", color=color, ms=3, label=key.replace("_", " ") if y == 0 else None)
            ticks.append(y)
            labels.append(f"{e[:18]}/{v[:10]}")
            y += 1
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("CTR (95 % credible interval)")
    ax.legend(fontsize=7)
    ax.set_title("Posterior intervals: data only (Beta(1, 1)) and with the prior", fontsize=10)
    return _png(fig)


def _calibration(cal: dict) -> bytes:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.4))
    pts = cal.get("points", [])
    if pts:
        ax1.scatter([p[0] for p in pts], [p[1] for p in pts], s=8, alpha=0.5)
        top = max(max(p[0] for p in pts), max(p[1] for p in pts)) * 1.05
        for ax in (ax1, ax2):
            ax.plot([0, top], [0, top], color="grey", lw=0.8)
        b = cal["bins"]
        ax2.plot([x["predicted"] for x in b], [x["realised"] for x in b], marker="o")
    ax1.set_xlabel("prior CTR")
    ax1.set_ylabel("realised CTR")
    ax1.set_title("each arm", fontsize=9)
    ax2.set_xlabel("prior CTR (bin mean)")
    ax2.set_title(f"reliability diagram, slope {cal['slope']:.2f}" if cal.get("slope") is not None else
                  "reliability diagram (too few arms)", fontsize=9)
    return _png(fig)


def _prior_moved(experiments: dict[str, dict]) -> bytes:
    names = list(experiments)[:30]
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.25 * len(names)))
    ax.barh(range(len(names)), [experiments[e]["prior_traffic_moved"] for e in names], label="traffic moved")
    ax.barh(range(len(names)), [experiments[e]["prior_share"] or 0.0 for e in names], height=0.3,
            label="prior share of the index")
    ax.set_yticks(range(len(names)), [e[:24] for e in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("How much the prior moved: allocation distance with vs without it", fontsize=10)
    return _png(fig)


def _health(health: dict) -> bytes:
    keys = [k for k in health if k != "decisions"]
    fig, ax = plt.subplots(figsize=(6, 2.2))
    ax.barh(keys, [health[k] for k in keys], color=["C2" if k == "joined" else "C3" for k in keys])
    ax.set_title(f"Logging health ({health.get('decisions', 0)} decisions)", fontsize=10)
    return _png(fig)


def figures(summary: dict) -> dict[str, bytes]:
    """PNG bytes per figure name (only those the data supports)."""
    figs: dict[str, bytes] = {}
    if summary["timelines"]:
        figs["allocation"] = _over_time(summary["timelines"], "share", "share of decisions", "Allocation over time")
        figs["p_best"] = _over_time(summary["timelines"], "p_best", "P(best)",
                                    "P(best) over time (solid: data only; dotted: with the prior)")
    if summary["experiments"]:
        figs["posteriors"] = _posteriors(summary["experiments"])
        figs["prior_moved"] = _prior_moved(summary["experiments"])
    figs["calibration"] = _calibration(summary["calibration"])
    if summary.get("health"):
        figs["health"] = _health(summary["health"])
    return figs


CAPTIONS = {
    "allocation": "Allocation over time: share of each bin's decisions per variant.",
    "p_best": "P(best) over time from the cumulative counts (data-only Beta(1, 1) posterior; dotted: with the prior).",
    "posteriors": "Posterior means and 95 % credible intervals from the latest snapshot.",
    "calibration": "The prior's predicted CTR against the realised CTR across arms; the slope is impression-weighted "
                   "least squares (1 = the prior's spread is right).",
    "prior_moved": "Traffic the prior moved: total-variation distance between P(best) with and without the prior "
                   "(the Thompson allocation of each); prior share: n_aux / (n + n_aux), impression-weighted.",
    "health": "Logging health: decisions whose impression never joined, impressions and clicks without a decision.",
}


def _table(summary: dict) -> list[list[str]]:
    rows = [["experiment", "policy", "impressions", "winner", "best P(best)", "traffic moved by prior"]]
    for e, x in summary["experiments"].items():
        arms = x["stats"]["arms"]
        best = max(arms, key=lambda v: arms[v]["p_best"]) if arms else ""
        win = x["winner"]
        rows.append([e, str(x["policy"]), f"{x['impressions']:.0f}",
                     f"{win['variant_id']} ({win['rule']})" if win else "none yet",
                     f"{best} {arms[best]['p_best']:.3f}" if best else "", f"{x['prior_traffic_moved']:.3f}"])
    return rows


def write(summary: dict, out_dir: Path, title: str = "lola report") -> dict[str, Path]:
    """report.md (+ PNG files), report.html (self-contained) and summary.json in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = figures(summary)
    for name, data in figs.items():
        (out_dir / f"{name}.png").write_bytes(data)
    rows = _table(summary)
    cal = summary["calibration"]
    md = [f"# {title}", "", f"Over time: {summary['over_time_source']}.", "",
          "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    md += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    md += ["", f"Prior calibration: {cal['arms']} arms, slope "
           f"{'n/a' if cal.get('slope') is None else format(cal['slope'], '.3f')}.", ""]
    if summary.get("health"):
        md += ["Logging health: " + ", ".join(f"{k} {v}" for k, v in summary["health"].items()) + ".", ""]
    for name in figs:
        md += [f"![{name}]({name}.png)", "", CAPTIONS[name], ""]
    (out_dir / "report.md").write_text("\n".join(md))
    esc = html.escape
    body = [f"<h1>{esc(title)}</h1>", f"<p>Over time: {esc(summary['over_time_source'])}.</p>", "<table>"]
    body += ["<tr>" + "".join(f"<th>{esc(c)}</th>" for c in rows[0]) + "</tr>"]
    body += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows[1:]]
    body += ["</table>"]
    for name, data in figs.items():
        b64 = base64.b64encode(data).decode("ascii")
        body += [f'<figure><img alt="{name}" src="data:image/png;base64,{b64}">'
                 f"<figcaption>{esc(CAPTIONS[name])}</figcaption></figure>"]
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + esc(title) + "</title>"
            "<link rel=\"icon\" href=\"data:,\"><style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}"
            "img{max-width:100%}</style></head><body>" + "\n".join(body) + "</body></html>\n")
    (out_dir / "report.html").write_text(page)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return {"markdown": out_dir / "report.md", "html": out_dir / "report.html", "json": out_dir / "summary.json"}
