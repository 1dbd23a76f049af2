"""The embedding projection of LLM-LinUCB's arm features (lola.export.projection): against an
independent eigendecomposition, shapes, its file format, and the replay's use of it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lola.errors import ConfigError, ModelIntegrityError
from lola.export.card import ModelCard
from lola.export.projection import SCALE_EPS, EmbeddingProjection, fit_projection
from lola.replay.priors import PriorTable
from lola.replay.run import _features_fn
from lola.stream.features import model_features


def _embeddings(n: int, D: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # a few strong directions plus noise, shifted: what a pooled hidden state looks like
    return rng.normal(size=(n, 4)) @ rng.normal(size=(4, D)) * 3 + rng.normal(size=(n, D)) * 0.3 + 5.0


@pytest.mark.parametrize("n,D,dim", [(50, 12, 5), (30, 8, 8), (200, 20, 16)])
def test_fit_matches_the_top_eigenvectors_of_the_covariance(n, D, dim):
    E = _embeddings(n, D, seed=n)
    proj = fit_projection(E, dim)
    k = min(dim, D, n - 1)
    assert proj.components.shape == (D, k) and proj.mean.shape == (D,) and proj.scale.shape == (k,)
    # twin: eigh of the covariance (another algorithm than the SVD), descending eigenvalues
    C = E - E.mean(axis=0)
    w, U = np.linalg.eigh(C.T @ C)
    U = U[:, ::-1][:, :k]
    for j in range(k):  # the same directions, up to sign, and the sign rule holds
        cos = float(proj.components[:, j] @ U[:, j])
        assert abs(cos) == pytest.approx(1.0, abs=1e-8)
        assert proj.components[np.abs(proj.components[:, j]).argmax(), j] > 0
    Z = proj.transform(E)
    expect = C @ proj.components / (np.std(C @ proj.components, axis=0) + SCALE_EPS) / math.sqrt(k)
    np.testing.assert_allclose(Z, expect, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(Z.std(axis=0) * math.sqrt(k), 1.0, atol=1e-6)  # unit variance on train
    corr = np.corrcoef(Z.T) if k > 1 else np.ones((1, 1))
    np.testing.assert_allclose(corr, np.eye(k), atol=1e-8)  # uncorrelated coordinates


def test_components_are_capped_by_rows_and_width():
    assert fit_projection(_embeddings(3, 10, 0), 16).dim == 2  # 3 centred rows span 2 directions
    assert fit_projection(_embeddings(40, 4, 0), 16).dim == 4
    assert fit_projection(_embeddings(40, 4, 0), 1).dim == 1
    for bad in (0, 65, 2.0, True):
        with pytest.raises(ConfigError):
            fit_projection(_embeddings(10, 4, 0), bad)
    E = _embeddings(10, 4, 0)
    E[3, 1] = np.nan
    for bad_e in (E, np.ones((1, 4)), np.ones(4)):
        with pytest.raises(ConfigError):
            fit_projection(bad_e, 2)


def test_the_file_round_trips_exactly_and_bad_files_are_refused():
    proj = fit_projection(_embeddings(30, 6, 1), 3)
    back = EmbeddingProjection.from_json(json.dumps(proj.to_json()))
    E = _embeddings(5, 6, 2)
    np.testing.assert_array_equal(back.transform(E), proj.transform(E))
    good = proj.to_json()
    for change in ({"format": 2}, {"kind": "pca"}, {"dim": 4}, {"scale": [1.0, -1.0, 1.0]},
                   {"mean": [0.0] * 5}, {"components": "x"}):
        with pytest.raises(ModelIntegrityError):
            EmbeddingProjection.from_json(json.dumps({**good, **change}))
    with pytest.raises(ModelIntegrityError):
        EmbeddingProjection.from_json(b"not json")
    with pytest.raises(ModelIntegrityError):
        proj.transform(np.ones((2, 5)))  # wrong embedding width


def test_a_card_without_projection_is_an_old_model_and_one_with_is_typed():
    base = {"tokenizer": {"pad_token_id": 0, "max_length": 8}, "target_scaling": {"mean": 0.01, "std": 0.005},
            "variants": {"fp32": "model.onnx"}}
    assert ModelCard.parse(base).projection is None
    card = ModelCard.parse({**base, "projection": {"file": "projection.json", "dim": 16, "fitted_on": "x"}})
    assert card.projection.file == "projection.json" and card.projection.dim == 16
    with pytest.raises(ModelIntegrityError):
        ModelCard.parse({**base, "projection": {"file": "projection.json", "dim": 0}})


def test_model_features_pad_or_truncate_after_the_intercept():
    z = np.array([0.5, -1.0, 2.0])
    np.testing.assert_array_equal(model_features(z, 5), [1.0, 0.5, -1.0, 2.0, 0.0])
    np.testing.assert_array_equal(model_features(z, 3), [1.0, 0.5, -1.0])
    np.testing.assert_array_equal(model_features(z, 1), [1.0])
    with pytest.raises(ValueError):
        model_features(z, 0)


def test_replay_linucb_features_equal_the_former_recipe_up_to_component_signs():
    """The replay now calls fit_projection; its features are the former inline SVD's, each
    component possibly sign-flipped (an orthogonal change of basis: no LinUCB decision changes)."""
    E = _embeddings(60, 10, 3)
    texts = [f"headline {i}" for i in range(60)]
    table = PriorTable({t: 0.01 + 0.0001 * i for i, t in enumerate(texts)}, source="test",
                       embeddings={t: E[i] for i, t in enumerate(texts)})
    features, _ = _features_fn(table, texts[:40], dim=6)
    new = features(texts)
    # the former recipe (replay/run.py before issue 20)
    train = E[:40]
    mean = train.mean(axis=0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    Z = (E - mean) @ vt[:6].T
    old_z = Z / ((Z[:40]).std(axis=0) + 1e-9) / math.sqrt(6)
    np.testing.assert_array_equal(new[:, :2], np.column_stack([np.ones(60), table.lookup(texts) * 50.0]))
    np.testing.assert_allclose(np.abs(new[:, 2:]), np.abs(old_z), rtol=1e-9, atol=1e-12)
