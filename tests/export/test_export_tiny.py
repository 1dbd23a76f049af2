"""Train, resume, merge, export, validate and serve a tiny random-initialised Llama (seconds)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from lola.errors import ExportValidationError


def test_training_writes_state_and_adapter(trained_tiny):
    state = json.loads((trained_tiny / "train_state.json").read_text())
    assert state["steps_done"] == state["steps_planned"] == state["config"]["max_steps"] == 4
    assert not state["stopped_early"]
    assert state["config"]["lora_r"] == 4 and state["config"]["lora_target_modules"] == ["q_proj", "v_proj"]
    assert state["target_scaling"]["kind"] == "standardize" and state["target_scaling"]["std"] > 0
    assert (trained_tiny / "adapter" / "adapter_model.safetensors").is_file()
    assert len(list((trained_tiny / "checkpoints").glob("step-*"))) <= 2


def _trainable(out_dir):
    import torch

    newest = sorted((out_dir / "checkpoints").glob("step-*"))[-1]
    return torch.load(newest / "trainable.pt")


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, tiny_base, tiny_csv):
    """A run stopped by its time budget and resumed ends where an uninterrupted run ends."""
    from lola.export.config import make_config
    from lola.export.train import train

    common = dict(max_steps=4, min_impressions=0, train_limit=None, checkpoint_every=1, learning_rate=1e-2, seed=3,
                  lora_last_layers=1)
    straight = train(tiny_csv, tmp_path / "a", make_config("quick", **common), base=str(tiny_base), progress=False)
    stopped = train(tiny_csv, tmp_path / "b", make_config("quick", **common, max_train_seconds=1e-9),
                    base=str(tiny_base), progress=False)
    assert stopped["stopped_early"] and stopped["steps_done"] == 1
    resumed = train(tiny_csv, tmp_path / "b", make_config("quick", **common), base=str(tiny_base), progress=False)
    assert resumed["steps_done"] == straight["steps_done"] == 4
    a, b = _trainable(tmp_path / "a"), _trainable(tmp_path / "b")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    # and training really changed the weights (the LoRA B matrices start at zero)
    assert any(float(v.abs().sum()) > 0 for k, v in a.items() if "lora_B" in k)


def test_card_lists_every_file_with_sha256(exported_tiny):
    from lola.export.digest import file_sha256

    card = json.loads((exported_tiny / "model_card.json").read_text())
    on_disk = {p.name for p in exported_tiny.iterdir() if p.name != "model_card.json"}
    assert set(card["files"]) == on_disk == {"model.onnx", "model.int8.onnx", "tokenizer.json", "projection.json"}
    for name, entry in card["files"].items():
        assert entry["sha256"] == file_sha256(exported_tiny / name)
    for key in ("base", "data", "hyperparameters", "metrics", "target_scaling", "validation"):
        assert key in card
    assert card["validation"]["fp32"]["max_abs_diff_logits"] <= 1e-3
    assert len(card["validation"]["fp32"]["shapes"]) >= 2


def test_onnx_axes_are_dynamic(exported_tiny):
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported_tiny / "model.onnx"), providers=["CPUExecutionProvider"])
    for i in session.get_inputs():
        assert i.shape == ["batch_size", "sequence_length"]
    assert {o.name for o in session.get_outputs()} == {"logits", "embedding"}


def test_served_scores_match_the_merged_torch_model(trained_tiny, exported_tiny):
    import torch

    from lola.export.serve import OnnxPriorModel
    from lola.export.train import load_merged

    merged, tokenizer, state = load_merged(trained_tiny)
    texts = ["you won't believe what this dog did", "cats", "science says people love headlines about money"]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        z_torch = merged(**enc).logits[:, 0].numpy()
    model = OnnxPriorModel(exported_tiny, batch_size=2)
    np.testing.assert_allclose(model.raw_scores(texts), z_torch, atol=1e-4)
    # the torch-free tokenizer gives the same ids as the transformers one
    ids, _ = model.encode(texts)
    np.testing.assert_array_equal(ids, enc["input_ids"].numpy())
    scaling = state["target_scaling"]
    np.testing.assert_allclose(model.predict(texts), np.clip(scaling["mean"] + scaling["std"] * z_torch, 0, 1),
                               atol=1e-6)


def test_predict_is_batched_ordered_and_clamped(exported_tiny):
    from lola.export.serve import OnnxPriorModel

    texts = [f"dog {i} " * (i % 7 + 1) for i in range(23)] + [""]
    one = OnnxPriorModel(exported_tiny, batch_size=1).predict(texts)
    many = OnnxPriorModel(exported_tiny, batch_size=64).predict(texts)
    assert one.dtype == np.float64 and one.shape == (24,)
    np.testing.assert_allclose(one, many, atol=1e-6)
    assert ((one >= 0) & (one <= 1)).all()
    assert OnnxPriorModel(exported_tiny).predict([]).shape == (0,)
    # clamping: an absurd scaling in memory would push values outside [0, 1]
    model = OnnxPriorModel(exported_tiny)
    model.mean, model.std = 0.5, 1e6
    out = model.predict(texts)
    assert out.min() >= 0.0 and out.max() <= 1.0 and {0.0, 1.0} & set(out.tolist())


def test_embeddings_and_version(exported_tiny):
    from lola.export.serve import OnnxPriorModel

    model = OnnxPriorModel(exported_tiny)
    emb = model.embed(["a dog", "a cat", "a dog"])
    assert emb.dtype == np.float32 and emb.shape == (3, 32)
    np.testing.assert_allclose(emb[0], emb[2], atol=1e-6)
    assert len(model.model_version) == 16 and model.provider == "CPUExecutionProvider"


def test_predict_and_embed_is_one_pass_of_both(exported_tiny):
    from lola.export.serve import OnnxPriorModel

    model = OnnxPriorModel(exported_tiny, batch_size=2)
    texts = ["a much longer headline about dogs", "a cat", "the dog", ""]
    ctr, emb = model.predict_and_embed(texts)
    np.testing.assert_allclose(ctr, model.predict(texts), rtol=0, atol=1e-12)
    np.testing.assert_allclose(emb, model.embed(texts), rtol=0, atol=1e-6)
    empty_ctr, empty_emb = model.predict_and_embed([])
    assert empty_ctr.shape == (0,) and empty_emb.shape == (0, 32)


def test_int8_variant_serves_close_to_fp32(exported_tiny):
    from lola.export.serve import OnnxPriorModel

    texts = [f"dog {i} the one" for i in range(16)]
    fp32 = OnnxPriorModel(exported_tiny, variant="fp32").raw_scores(texts)
    int8 = OnnxPriorModel(exported_tiny, variant="int8").raw_scores(texts)
    assert np.abs(fp32 - int8).mean() <= 0.25


def test_validation_raises_on_a_mismatch(trained_tiny, exported_tiny):
    """Validating the exported graph against a different torch model must fail, never warn."""
    import copy

    import torch

    from lola.export.onnx_export import _embedding_model_class, validate
    from lola.export.train import load_merged

    merged, tokenizer, _ = load_merged(trained_tiny)
    with torch.no_grad():
        merged.score.weight.add_(0.5)
    wrapper = copy.copy(merged)
    wrapper.__class__ = _embedding_model_class(type(merged))
    with pytest.raises(ExportValidationError, match="ORT differs from torch"):
        validate(exported_tiny / "model.onnx", merged, wrapper, tokenizer.pad_token_id, "fp32")


def test_score_csv_one_row_per_input_row(tmp_path, exported_tiny):
    from lola.export.scoring import score_csv

    src = tmp_path / "in.csv"
    with src.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["clickability_test_id", "headline", "lede"])
        w.writerows([["1", "a dog", "x"], ["1", "a cat", ""], ["2", "a dog", "y"], ["3", "", ""]])
    summary = score_csv(exported_tiny, src, tmp_path / "out.csv")
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert [r["headline"] for r in rows] == ["a dog", "a cat", "a dog", ""]
    assert rows[0]["prior_ctr"] == rows[2]["prior_ctr"] and rows[3]["prior_ctr"] == ""
    assert all(0 <= float(r["prior_ctr"]) <= 1 for r in rows[:3])
    assert summary["rows"] == 4 and summary["empty_headlines"] == 1
    # through an embedding cache: the same scores, and a second run finds every headline cached
    cache = tmp_path / "emb.npz"
    for _ in range(2):
        score_csv(exported_tiny, src, tmp_path / "cached.csv", cache=cache)
        assert list(csv.DictReader((tmp_path / "cached.csv").open())) == rows
    assert any(p.name.startswith("emb.") for p in tmp_path.iterdir())


def test_serving_never_imports_torch(exported_tiny, fresh_serving_run):
    assert fresh_serving_run(exported_tiny) == {"bad": [], "n": 2, "readout": False}
