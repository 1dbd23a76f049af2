"""Honest evaluation of generated headlines with an independent judge (``lola variants eval``).

Generated headlines cannot be shown to real users here, so every figure is a
*prediction*. The judge is a different model family from the prior the generator is
ranked (and tuned) with: the replay's TF-IDF ridge (:func:`lola.replay.priors.fit_tfidf_ridge`),
fitted on the train split only. A generator that games the LLM prior (reward hacking)
gains nothing with the judge.

For each test-split story (one headline test with a lede), the generator samples N
candidates from the lede; the pipeline drops duplicates, cut-off and non-compliant
ones and ranks the rest by the prior and λ. Reported per story: the judge's CTR of the
top candidate, of the archive's best headline (best by its real CTR) and the mean over
the archive's headlines; the compliance pass rate and distinct-1/2 of the candidates.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lola.comply import Policy
from lola.data.upworthy import HeadlineTest, headline_tests, load_packages, split_packages
from lola.errors import DataError
from lola.export.metrics import paired_bootstrap, pairwise_accuracy, top1_accuracy
from lola.export.text import clean_text
from lola.generation.model import Generator
from lola.generation.pipeline import PriorScorer, generate
from lola.generation.score import distinct_n
from lola.generation.tune import TRAIN_BRIEF_CHARS
from lola.replay.priors import fit_tfidf_ridge


def stories(csv_path: str | Path, split: str, limit: int) -> tuple[list[tuple[HeadlineTest, str]], dict]:
    """``(test, brief)`` for the first ``limit`` tests of ``split`` (sorted by id) with a lede; and the packages per split."""
    packages, _ = load_packages(csv_path)
    parts = split_packages(packages)
    out = []
    for test in sorted(headline_tests(parts[split]), key=lambda t: (t.test_id, t.eyecatcher_id)):
        brief = next((clean_text(p.lede) for p in test.packages if clean_text(p.lede)), "")
        if len(brief) >= 40:
            out.append((test, brief))
        if len(out) >= limit:
            break
    if not out:
        raise DataError(f"no {split}-split test with a lede in {csv_path}")
    return out, parts


def evaluate_generator(generator: Generator, items: Sequence[tuple[HeadlineTest, str]], judge, policy: Policy,
                       prior: PriorScorer | None, n: int, lam: float, seed: int, log=print,
                       on_row=None) -> list[dict[str, Any]]:
    """One row per story (see the module docstring); ``on_row(rows)`` after each story (partial results)."""
    rows = []
    for i, (test, brief) in enumerate(items):
        t = time.monotonic()
        # The brief as the tuned generator saw it in training (the lede's first 300 characters).
        result = generate(generator, brief[:TRAIN_BRIEF_CHARS], (), policy, n=n, seed=seed + i, lam=lam, prior=prior)
        ranked = [c["text"] for c in result.candidates if c["rank"] is not None]
        checked = len(result.candidates)
        human = judge(list(test.headlines))
        row = {"test_id": test.test_id, "eyecatcher_id": test.eyecatcher_id, "brief": brief[:200],
               "top": ranked[0] if ranked else None,
               "judge_top": float(judge([ranked[0]])[0]) if ranked else None,
               "judge_candidates_mean": float(np.mean(judge(ranked))) if ranked else None,
               "judge_human_best": float(human[test.best]), "judge_human_mean": float(human.mean()),
               "human_best": test.headlines[test.best], "checked": checked, "compliant": len(ranked),
               "distinct_1": distinct_n(ranked, 1), "distinct_2": distinct_n(ranked, 2),
               "new_tokens": result.new_tokens, "seconds": round(time.monotonic() - t, 1)}
        rows.append(row)
        if on_row is not None:
            on_row(rows)
        log(f"[{i + 1}/{len(items)}] {row['seconds']}s top={row['top']!r}")
    return rows


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    judged = [r for r in rows if r["judge_top"] is not None]
    checked = sum(r["checked"] for r in rows)
    return {
        "stories": len(rows), "stories_with_a_candidate": len(judged),
        "judge_top_mean": float(np.mean([r["judge_top"] for r in judged])) if judged else None,
        "judge_candidates_mean": float(np.mean([r["judge_candidates_mean"] for r in judged])) if judged else None,
        "judge_human_best_mean": float(np.mean([r["judge_human_best"] for r in rows])),
        "judge_human_mean_mean": float(np.mean([r["judge_human_mean"] for r in rows])),
        "top_vs_human_best": paired_bootstrap(np.array([r["judge_top"] for r in judged]),
                                              np.array([r["judge_human_best"] for r in judged])) if judged else None,
        "judge_human_best_above_mean_share": float(np.mean([r["judge_human_best"] > r["judge_human_mean"]
                                                            for r in rows])),
        "top_beats_human_mean_share": float(np.mean([r["judge_top"] > r["judge_human_mean"] for r in judged]))
        if judged else None,
        "compliance_pass_rate": sum(r["compliant"] for r in rows) / checked if checked else None,
        "distinct_1": float(np.mean([r["distinct_1"] for r in rows])),
        "distinct_2": float(np.mean([r["distinct_2"] for r in rows])),
        "new_tokens": int(sum(r["new_tokens"] for r in rows)), "seconds": float(sum(r["seconds"] for r in rows)),
    }


def compare(base: Sequence[dict[str, Any]], tuned: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Tuned minus base, paired by story: the judge's CTR of the top candidate (a story
    without a compliant candidate counts as the archive's mean headline, a neutral fill)."""
    by_id = {(r["test_id"], r["eyecatcher_id"]): r for r in base}
    pairs = [(by_id[(r["test_id"], r["eyecatcher_id"])], r) for r in tuned if (r["test_id"], r["eyecatcher_id"]) in by_id]
    if not pairs:
        raise DataError("the two evaluations share no story")

    def filled(r, key):
        return r[key] if r.get(key) is not None else r["judge_human_mean"]

    def diff(key):
        return paired_bootstrap(np.array([filled(t, key) for _, t in pairs]), np.array([filled(b, key) for b, _ in pairs]))

    return {"judge_top_tuned_minus_base": diff("judge_top"),
            "judge_candidates_mean_tuned_minus_base": diff("judge_candidates_mean"), "stories": len(pairs)}


def judge_for(train_packages) -> Any:
    """The judge: TF-IDF ridge on the train split (a different family from the LLM prior)."""
    return fit_tfidf_ridge(train_packages)


def paired_report(base: Sequence[dict[str, Any]], tuned: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Both generators summarised on the stories both evaluations reached (complete or partial
    runs), with the paired tuned-minus-base differences and the success criterion's three parts."""
    keys = {(r["test_id"], r["eyecatcher_id"]) for r in base} & {(r["test_id"], r["eyecatcher_id"]) for r in tuned}
    b = [r for r in base if (r["test_id"], r["eyecatcher_id"]) in keys]
    t = [r for r in tuned if (r["test_id"], r["eyecatcher_id"]) in keys]
    if not keys:
        raise DataError("the two evaluations share no story")
    sb, st, paired = summarise(b), summarise(t), compare(b, t)
    top = paired["judge_top_tuned_minus_base"]
    return {"base": sb, "tuned": st, "paired": paired,
            "criterion": {"judge_prefers_tuned_interval_above_zero": bool(top["lo"] > 0),
                          "tuned_compliance_at_least_99pct": bool((st["compliance_pass_rate"] or 0) >= 0.99),
                          "distinct_2_change": st["distinct_2"] / sb["distinct_2"] - 1 if sb["distinct_2"] else None,
                          "diversity_within_10pct": bool(st["distinct_2"] >= 0.9 * sb["distinct_2"])}}


def judge_check(judge, packages) -> dict[str, Any]:
    """How well the judge orders headlines *within* a test, on the tests of ``packages`` (pass the
    tune split: never the test split the evaluation reports on). Pairwise accuracy on significant
    pairs and top-1 accuracy, as :mod:`lola.export.metrics` defines them (0.5 and 1/arms: chance)."""
    tests = headline_tests(packages)
    predict = lambda t: judge(list(t.headlines))  # noqa: E731
    acc, pairs = pairwise_accuracy(tests, predict)
    return {"tests": len(tests), "pairwise_accuracy": acc, "significant_pairs": pairs,
            "top1_accuracy": top1_accuracy(tests, predict),
            "top1_chance": float(np.mean([1.0 / t.n_arms for t in tests])) if tests else None}


def write(path: str | Path, payload: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=1, ensure_ascii=False))
