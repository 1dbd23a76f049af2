"""The evaluation's pairing of base and tuned rows and the judge check (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from lola.data.upworthy import Package
from lola.errors import DataError
from lola.generation.evaluate import compare, judge_check, summarise


def row(test, top, cands, best=0.02, mean=0.015, checked=4, compliant=4):
    return {"test_id": test, "eyecatcher_id": "e", "judge_top": top, "judge_candidates_mean": cands,
            "judge_human_best": best, "judge_human_mean": mean, "checked": checked, "compliant": compliant,
            "distinct_1": 0.8, "distinct_2": 0.9, "new_tokens": 10, "seconds": 1.0}


def test_compare_pairs_by_story_and_fills_a_story_without_candidates_with_the_archive_mean():
    base = [row("a", 0.010, 0.010), row("b", 0.020, 0.015), row("c", 0.030, 0.02)]
    tuned = [row("b", 0.025, 0.017), row("a", None, None, compliant=0), row("z", 0.5, 0.5)]  # z: not in base
    out = compare(base, tuned)
    assert out["stories"] == 2
    top = out["judge_top_tuned_minus_base"]
    assert top["diff"] == pytest.approx(((0.025 - 0.020) + (0.015 - 0.010)) / 2)
    assert out["judge_candidates_mean_tuned_minus_base"]["diff"] == pytest.approx(((0.017 - 0.015) + 0.005) / 2)
    with pytest.raises(DataError):
        compare(base, [row("z", 0.1, 0.1)])


def test_summarise_counts_compliance_and_the_judges_order_of_the_archive():
    s = summarise([row("a", 0.01, 0.01, best=0.03, mean=0.02, checked=4, compliant=3),
                   row("b", None, None, best=0.01, mean=0.02, checked=2, compliant=0)])
    assert s["compliance_pass_rate"] == pytest.approx(3 / 6)
    assert s["stories_with_a_candidate"] == 1 and s["judge_human_best_above_mean_share"] == 0.5


def test_judge_check_reads_the_judges_order_within_tests():
    packages = []
    for t in range(5):
        for h, ctr in enumerate((0.05, 0.01)):
            packages.append(Package(f"t{t}", "e", f"h{h} of {t}", 10_000, int(10_000 * ctr)))
    truth = {p.headline: p.ctr for p in packages}
    right = judge_check(lambda hs: np.array([truth[h] for h in hs]), packages)
    wrong = judge_check(lambda hs: np.array([-truth[h] for h in hs]), packages)
    assert right["tests"] == 5 and right["significant_pairs"] == 5
    assert right["pairwise_accuracy"] == 1.0 and right["top1_accuracy"] == 1.0
    assert wrong["pairwise_accuracy"] == 0.0 and wrong["top1_accuracy"] == 0.0 and right["top1_chance"] == 0.5


def test_paired_report_uses_the_common_stories_and_reads_the_criterion():
    from lola.generation.evaluate import paired_report

    base = [row(s, 0.01, 0.01) for s in "abcdef"]
    tuned = [row(s, 0.02, 0.015) for s in "abcd"]            # a partial run: 4 of the 6 stories
    out = paired_report(base, tuned)
    assert out["paired"]["stories"] == 4 and out["base"]["stories"] == 4
    assert out["criterion"]["judge_prefers_tuned_interval_above_zero"]      # +1 point on every story
    assert out["criterion"]["tuned_compliance_at_least_99pct"] and out["criterion"]["diversity_within_10pct"]
    worse = paired_report(base, [row(s, 0.005, 0.01, compliant=3) for s in "abcd"])
    assert not worse["criterion"]["judge_prefers_tuned_interval_above_zero"]
    assert not worse["criterion"]["tuned_compliance_at_least_99pct"]
