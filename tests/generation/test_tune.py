"""Preference pairs from the archive and the DPO loss (no model)."""

from __future__ import annotations

import math

import pytest

from lola.comply import parse_policy
from lola.data.upworthy import Package
from lola.generation.tune import dpo_loss, preference_pairs

POLICY = parse_policy("unverifiable_claims: ['\\bguaranteed\\b']\n")
LEDE = "<p>A long enough lede about a priest who debates a creationist on live television.</p>"


def pkg(test, headline, imps, clicks, lede=LEDE):
    return Package(test, "eye", headline, imps, clicks, lede=lede)


def test_pairs_are_significant_winner_first_and_compliant():
    packages = [
        pkg("t1", "Winner Headline", 10_000, 300), pkg("t1", "Loser Headline", 10_000, 100),
        pkg("t1", "Close Second", 10_000, 295),                         # not significantly below the winner
        pkg("t2", "A guaranteed winner", 10_000, 400), pkg("t2", "Plain", 10_000, 100),  # winner blocked
        pkg("t3", "No Lede A", 10_000, 400, lede=""), pkg("t3", "No Lede B", 10_000, 100, lede=""),
    ]
    pairs = preference_pairs(packages, POLICY)
    got = {(p.chosen, p.rejected) for p in pairs}
    assert got == {("Winner Headline", "Loser Headline"), ("Close Second", "Loser Headline")}
    assert all(p.brief.startswith("A long enough lede") for p in pairs)


def test_dpo_loss_matches_its_formula():
    torch = pytest.importorskip("torch")
    pc, pr = torch.tensor([-10.0, -12.0]), torch.tensor([-11.0, -9.0])
    rc, rr = torch.tensor([-10.5, -12.0]), torch.tensor([-10.5, -10.0])
    loss, margin = dpo_loss(pc, pr, rc, rr, beta=0.5)
    want_m = [0.5 * ((-10 + 10.5) - (-11 + 10.5)), 0.5 * ((-12 + 12) - (-9 + 10))]
    assert margin.tolist() == pytest.approx(want_m)
    want = sum(-math.log(1 / (1 + math.exp(-m))) for m in want_m) / 2
    assert float(loss) == pytest.approx(want)
    # identical policy and reference: margin 0, loss log 2 (where training starts)
    loss0, _ = dpo_loss(rc, rr, rc, rr, beta=0.1)
    assert float(loss0) == pytest.approx(math.log(2))
