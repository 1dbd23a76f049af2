"""The refitted linear readout (``lola priors readout``) on the tiny exported model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lola.errors import DataError, ModelIntegrityError

TEXTS = ["you won't believe what this dog did", "cats", "science says people love headlines about money", ""]


@pytest.fixture(scope="module")
def with_readout(tmp_path_factory, exported_tiny, tiny_csv):
    """A copy of the tiny export with a fitted readout (the shared fixture stays without one)."""
    from lola.export.readout import fit_readout

    out = tmp_path_factory.mktemp("readout") / "model"
    shutil.copytree(exported_tiny, out)
    entry = fit_readout(out, tiny_csv)
    return out, entry


def test_fit_writes_a_hashed_file_and_a_card_entry(with_readout):
    from lola.export.digest import file_sha256
    from lola.export.readout import RIDGE_ALPHAS

    out, entry = with_readout
    card = json.loads((out / "model_card.json").read_text())
    assert card["readout"] == entry
    assert card["files"]["readout.json"]["sha256"] == file_sha256(out / "readout.json")
    # every other file is still listed with its hash
    assert set(card["files"]) == {"model.onnx", "model.int8.onnx", "tokenizer.json", "projection.json", "readout.json"}
    assert card["projection"]["file"] == "projection.json"  # kept by the readout's card rewrite
    grid = {g["alpha"]: g["tune_weighted_mse"] for g in entry["grid"]}
    assert sorted(grid) == sorted(RIDGE_ALPHAS)
    assert entry["alpha"] == min(grid, key=grid.get)  # chosen on tune MSE
    assert entry["train_headlines"] > entry["tune_headlines"] > 0


def test_prediction_is_level_plus_embedding_dot_weights(with_readout):
    from lola.export.serve import OnnxPriorModel

    out, _ = with_readout
    model = OnnxPriorModel(out)
    readout = json.loads((out / "readout.json").read_text())
    emb = model.embed(TEXTS).astype(np.float64)
    by_hand = np.clip(emb @ np.array(readout["weights"]) + readout["bias"], 0.0, 1.0)  # a ctr-target model: no level
    np.testing.assert_allclose(model.predict(TEXTS), by_hand, rtol=0, atol=1e-9)
    ctr, emb32 = model.predict_and_embed(TEXTS)
    np.testing.assert_allclose(ctr, by_hand, rtol=0, atol=1e-9)
    assert emb32.dtype == np.float32
    # the readout replaces the network head: the two disagree on these texts
    head = OnnxPriorModel(out, readout=False).predict(TEXTS)
    assert np.abs(head - ctr).max() > 1e-6


def test_without_readout_the_network_head_serves_as_before(with_readout, exported_tiny):
    from lola.export.serve import OnnxPriorModel

    out, _ = with_readout
    np.testing.assert_allclose(OnnxPriorModel(out, readout=False).predict(TEXTS),
                               OnnxPriorModel(exported_tiny).predict(TEXTS), rtol=0, atol=1e-12)


def test_a_tampered_readout_is_refused(tmp_path, with_readout):
    from lola.export.serve import OnnxPriorModel

    out, _ = with_readout
    copy = tmp_path / "model"
    shutil.copytree(out, copy)
    data = json.loads((copy / "readout.json").read_text())
    data["bias"] += 0.1
    (copy / "readout.json").write_text(json.dumps(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        OnnxPriorModel(copy)
    OnnxPriorModel(copy, readout=False)  # the network head does not need the file


def test_a_readout_of_the_wrong_size_is_refused(tmp_path, with_readout):
    from lola.export.onnx_export import write_card
    from lola.export.serve import OnnxPriorModel

    out, _ = with_readout
    copy = tmp_path / "model"
    shutil.copytree(out, copy)
    data = json.loads((copy / "readout.json").read_text())
    data["weights"] = data["weights"][:-1]
    (copy / "readout.json").write_text(json.dumps(data))
    write_card(copy, json.loads((copy / "model_card.json").read_text()))  # hashes agree, content is wrong
    with pytest.raises(ModelIntegrityError, match="readout weights"):
        OnnxPriorModel(copy)


def test_fit_refuses_data_other_than_the_training_file(tmp_path, exported_tiny, tiny_csv):
    from lola.export.readout import fit_readout

    copy = tmp_path / "model"
    shutil.copytree(exported_tiny, copy)
    other = tmp_path / "other.csv"
    other.write_text(tiny_csv.read_text().replace("A lede about it.", "Another lede."))
    with pytest.raises(DataError, match="not the file this model was trained on"):
        fit_readout(copy, other)
    assert not (copy / "readout.json").exists()


def test_serving_with_a_readout_never_imports_torch_or_sklearn(with_readout, fresh_serving_run):
    out, _ = with_readout
    assert fresh_serving_run(out) == {"bad": [], "n": 2, "readout": True}


def test_bench_torch_eager_serves_the_same_readout(with_readout, tiny_csv):
    """lola bench priors compares engines doing the same work: torch eager applies the readout too."""
    from lola.bench.priors_bench import run_bench

    out, _ = with_readout
    report = run_bench(out, None, tiny_csv, n=8, batch_size=4, rounds=1)
    assert report["agreement"]["ort_fp32_max_abs_diff_ctr_vs_torch"] < 1e-5
