"""Prompt and clean-up of sampled text; the pipeline's dedup, compliance drop and ranking with a fake model."""

from __future__ import annotations

import numpy as np
import pytest

from lola.comply import parse_policy
from lola.generation.model import Sample
from lola.generation.pipeline import generate
from lola.generation.text import MAX_EXAMPLES, clean_candidate, dedup_key, prompt_messages

POLICY = parse_policy("max_length: 80\nmin_length: 5\nunverifiable_claims: ['\\bguaranteed\\b']\n")


@pytest.mark.parametrize("raw, want", [
    ('"A Priest Walks Into A Debate"', "A Priest Walks Into A Debate"),
    ("Here's a catchy headline: Dogs   Love Snow\nmore text", "Dogs Love Snow"),
    ("Headline: Cats At Sea", "Cats At Sea"),
    ("Here's a revised headline that challenges those who advocate:", ""),
    ("\n\n  **Bold Move**  ", "Bold Move"),
    ("", ""),
])
def test_clean_candidate(raw, want):
    assert clean_candidate(raw) == want


def test_dedup_key_ignores_case_spacing_and_punctuation():
    assert dedup_key("Dogs love snow!") == dedup_key("dogs  LOVE snow") == "dogs love snow"


def test_prompt_shows_a_few_existing_headlines():
    msgs = prompt_messages("<p>A story &amp; more</p>", [f"h{i}" for i in range(10)])
    user = msgs[1]["content"]
    assert "A story & more" in user and "<p>" not in user
    assert user.count("\n- ") == MAX_EXAMPLES and "different" in user
    assert "different" not in prompt_messages("brief")[1]["content"]


class FakeGenerator:
    """The Generator's interface over fixed texts (the pipeline's logic without a model)."""

    def __init__(self, texts, complete=None):
        self.texts = tuple(texts)
        self.complete = tuple(complete or [True] * len(texts))

    def sample(self, brief, existing=(), n=16, seed=0, temperature=0.9):
        return Sample(self.texts[:n], self.texts[:n], self.complete[:n], 10 * n, 0.01)

    def embed(self, texts):
        rows = np.array([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts], dtype=float).reshape(-1, 3)
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def test_pipeline_dedups_drops_blocked_and_ranks():
    texts = ["Dogs Love Snow", "dogs love snow!", "A guaranteed win for cats", "", "Old Headline Here",
             "Penguins Learn To Surf", "Cut off in the midd"]
    gen = FakeGenerator(texts, complete=[True] * 6 + [False])
    prior = lambda ts: np.array([0.01 * (i + 1) for i in range(len(ts))])  # noqa: E731
    out = generate(gen, "brief", ["Old headline here"], POLICY, n=7, prior=prior, lam=0.0)
    assert (out.sampled, out.duplicates, out.empty, out.blocked) == (7, 2, 2, 1)
    ranked = [c for c in out.candidates if c["rank"] is not None]
    assert [c["text"] for c in ranked] == ["Penguins Learn To Surf", "Dogs Love Snow"]   # λ=0: by CTR
    assert [c["rank"] for c in ranked] == [1, 2] and ranked[0]["predicted_ctr"] == 0.02
    blocked = out.candidates[-1]
    assert blocked["text"] == "A guaranteed win for cats" and blocked["compliant"] is False
    assert blocked["violations"][0]["rule"] == "unverifiable_claim" and blocked["rank"] is None
    assert out.top(1)[0]["text"] == "Penguins Learn To Surf"


def test_pipeline_without_a_prior_ranks_by_creativity():
    out = generate(FakeGenerator(["Dogs Love Snow", "Cats Hate Rain"]), "brief", [], POLICY, n=2, prior=None)
    ranked = [c for c in out.candidates if c["rank"] is not None]
    assert all(c["predicted_ctr"] is None for c in ranked)
    assert ranked[0]["creativity"] >= ranked[1]["creativity"]


def test_a_missing_prior_model_is_said_not_guessed(tmp_path):
    from lola.generation.pipeline import open_prior

    scorer, note = open_prior(tmp_path / "nope")
    assert scorer is None and "no prior model at" in note and "lola priors build-default" in note
    scorer, note = open_prior(None)
    assert scorer is None and "ranked by creativity only" in note
