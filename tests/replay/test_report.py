"""Table 8 arithmetic, stars and paired t-tests on synthetic inputs (no kernels needed)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lola.replay.report import (
    find,
    improvement_table,
    markdown_improvements,
    markdown_results,
    paired_improvement,
    plot_figure7,
    results_rows,
    stars,
)
from lola.errors import ConfigError


@pytest.mark.parametrize(
    "p, mark",
    [(0.2, ""), (0.05, "*"), (0.0101, "*"), (0.01, "**"), (0.001, "***"), (1e-4, "****"), (1e-9, "****"), (float("nan"), "")],
)
def test_stars_follow_table8_levels(p, mark):
    assert stars(p) == mark


def test_improvement_matches_the_papers_worked_example():
    # Table 8's caption: 0.053760 / 0.050267 - 1 = 6.95 %.
    a = np.full(4, 0.053760) + np.array([1e-4, -1e-4, 2e-4, -2e-4])
    b = np.full(4, 0.050267) + np.array([0.0, 1e-5, -1e-5, 0.0])
    imp = paired_improvement(50, "LOLA", "UCB", a, b)
    assert imp.improvement_pct == pytest.approx(6.95, abs=0.005)
    assert imp.n_tests == 4


def test_p_value_is_the_paired_t_test():
    rng = np.random.default_rng(7)
    b = rng.uniform(0.02, 0.08, size=50)
    a = b + rng.normal(0.001, 0.004, size=50)
    imp = paired_improvement(100, "A", "B", a, b)
    assert imp.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)
    # Pairing matters: an unpaired test on the same numbers gives a different p-value.
    assert imp.p_value != pytest.approx(stats.ttest_ind(a, b).pvalue)


def test_identical_policies_give_zero_improvement_and_p_one():
    s = np.array([0.01, 0.02, 0.03])
    imp = paired_improvement(50, "A", "B", s, s.copy())
    assert imp.improvement_pct == 0.0 and imp.p_value == 1.0 and imp.stars == ""


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ConfigError, match="paired scores"):
        paired_improvement(50, "A", "B", np.zeros(3), np.zeros(4))


def test_table_covers_every_pair_once_and_flips_consistently():
    rng = np.random.default_rng(1)
    policies = ["LOLA", "UCB", "E&C"]
    scores = {(t, p): rng.uniform(0.04, 0.06, 30) for t in (50, 100) for p in policies}
    table = improvement_table(scores, (50, 100), policies)
    assert len(table) == 2 * 3
    row = find(table, 50, "LOLA", "UCB")
    flipped = find(table, 50, "UCB", "LOLA")
    assert row is not None and flipped is not None
    ratio = (1 + row.improvement_pct / 100) * (1 + flipped.improvement_pct / 100)
    assert ratio == pytest.approx(1.0)
    assert flipped.p_value == row.p_value
    md = markdown_improvements(table, (50, 100))
    assert "LOLA vs UCB" in md and md.count("\n") == 3


def test_results_rows_and_plot(tmp_path):
    scores = {(50, "LOLA"): np.array([0.05, 0.07]), (50, "UCB"): np.array([0.04, 0.06])}
    rows = results_rows(scores)
    assert {r["policy"] for r in rows} == {"LOLA", "UCB"}
    assert [r["clicks_per_period"] for r in rows] == pytest.approx([0.06, 0.05])
    assert "**0.06000**" in markdown_results(rows, (50,), ("LOLA", "UCB"))
    out = plot_figure7(rows, (50,), ("LOLA", "UCB"), tmp_path / "fig.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_setting_for_all_horizons_minimises_the_mean_shortfall():
    from lola.replay.run import one_setting_for_all_horizons

    a, b = {"alpha": 0.1, "n_aux": 100.0}, {"alpha": 0.1, "n_aux": 5600.0}
    # a is best at tau 50 only; b gives up 10 % there and is best at tau 1000, where a gives up 50 %.
    tuning = {"50": {"LOLA": [(a, 2.0), (b, 1.8)]}, "1000": {"LOLA": [(a, 20.0), (b, 40.0)]}}
    one = one_setting_for_all_horizons(tuning)
    assert one["params"] == b
    assert one["tune_shortfall_pct_mean"] == pytest.approx(5.0)
    assert one["tune_shortfall_pct_by_tau"] == {"50": pytest.approx(10.0), "1000": pytest.approx(0.0)}
    assert one_setting_for_all_horizons({"50": {"UCB": [({"alpha": 0.1}, 1.0)]}}) is None
