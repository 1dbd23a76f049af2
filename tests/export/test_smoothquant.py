"""SmoothQuant + dynamic int8 (lola.export.smoothquant) on the tiny model: exact transform, strict checks."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from lola.errors import ConfigError, ExportValidationError


def _random_batches(model, seed: int = 0):
    from lola.export.onnx_export import validation_inputs

    return validation_inputs(model.config.pad_token_id, model.config.vocab_size, seed=seed)


def _outputs(model, batches):
    import torch

    from lola.export.onnx_export import with_embedding

    wrapper = with_embedding(model)
    out = []
    with torch.inference_mode():
        for ids, mask in batches:
            res = wrapper(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
            out.append((res.logits.double().numpy(), res.embedding.double().numpy()))
    return out


@pytest.mark.parametrize("alpha", [0.5, 0.85])
@pytest.mark.parametrize("smooth_o_proj", [False, True])
def test_smoothing_leaves_the_torch_model_unchanged(trained_tiny, alpha, smooth_o_proj):
    """The folds are exact: scores and embeddings agree to float rounding, while the weights did move."""
    from lola.export.smoothquant import activation_absmax, smooth_model
    from lola.export.train import load_merged

    merged, _, _ = load_merged(trained_tiny)
    stats = activation_absmax(merged, _random_batches(merged, seed=1))
    smoothed = copy.deepcopy(merged)
    summary = smooth_model(smoothed, stats, alpha, smooth_o_proj)
    assert summary["layers"] == merged.config.num_hidden_layers
    layer, ref = smoothed.model.layers[0], merged.model.layers[0]
    assert not np.allclose(layer.mlp.down_proj.weight.detach().numpy(), ref.mlp.down_proj.weight.detach().numpy())
    assert np.allclose(layer.self_attn.o_proj.weight.detach().numpy(),
                       ref.self_attn.o_proj.weight.detach().numpy()) != smooth_o_proj
    for (l0, e0), (l1, e1) in zip(_outputs(merged, _random_batches(merged)), _outputs(smoothed, _random_batches(merged))):
        np.testing.assert_allclose(l1, l0, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(e1, e0, rtol=1e-4, atol=1e-5)


def test_smoothing_flattens_an_outlier_channel(trained_tiny):
    """A channel 50x larger than the rest (what breaks per-tensor int8) is pulled back towards the others."""
    import torch

    from lola.export.smoothquant import activation_absmax, massive_projections, smooth_model
    from lola.export.train import load_merged

    merged, _, _ = load_merged(trained_tiny)
    with torch.no_grad():
        merged.model.layers[1].input_layernorm.weight[5] *= 50.0
    batches = _random_batches(merged, seed=2)
    stats = activation_absmax(merged, batches)
    before = stats["model.layers.1.self_attn.q_proj"]
    smoothed = copy.deepcopy(merged)
    smooth_model(smoothed, stats, 0.75)
    after = activation_absmax(smoothed, batches)["model.layers.1.self_attn.q_proj"]
    spread = lambda x: float(x.max() / x.median())  # noqa: E731
    assert int(before.argmax()) == 5 and spread(before) > 20
    assert spread(after) < spread(before) / 5
    # the same statistics flag that layer's attention inputs as massive, and nothing else
    assert massive_projections(stats, spread(before) / 2) == [f"model.layers.1.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")]


def test_projections_kept_fp32_stay_plain_matmuls(tmp_path, exported_tiny):
    import onnx

    from lola.export.smoothquant import quantize_dynamic_int8

    n = quantize_dynamic_int8(exported_tiny / "model.onnx", tmp_path / "q.onnx", ["model.layers.1.mlp.down_proj"])
    assert n == 13
    nodes = {node.name: node.op_type for node in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert nodes["/model/layers.1/mlp/down_proj/MatMul"] == "MatMul"
    assert "/model/layers.0/mlp/down_proj/MatMul" not in nodes  # replaced by its int8 form


def test_o_proj_scales_are_shared_by_the_query_heads_of_one_kv_head(trained_tiny):
    import torch

    from lola.export.smoothquant import _o_proj_scales, head_dim_of
    from lola.export.train import load_merged

    merged, _, _ = load_merged(trained_tiny)
    attn = merged.model.layers[0].self_attn
    d = head_dim_of(attn)
    n_q = merged.config.num_attention_heads
    act = torch.rand(n_q * d) + 0.1
    s_kv, s_o = _o_proj_scales(attn, act, 0.5)
    assert s_kv.shape[0] == attn.v_proj.weight.shape[0] and s_o.shape[0] == attn.o_proj.weight.shape[1]
    group = n_q // merged.config.num_key_value_heads
    for head in range(n_q):
        np.testing.assert_array_equal(s_o[head * d:(head + 1) * d].numpy(),
                                      s_kv[(head // group) * d:(head // group + 1) * d].numpy())


def test_card_records_method_alpha_calibration_and_agreement(exported_tiny, tiny_csv):
    card = json.loads((exported_tiny / "model_card.json").read_text())
    int8 = card["validation"]["int8"]
    assert int8["method"] == "smoothquant+dynamic int8"
    q = int8["quantization"]
    assert 0 < q["alpha"] <= 1 and q["calibration"]["split"] == "train" and q["calibration"]["calibration"] > 0
    # q/k/v/o/gate/up/down in each of the 2 layers, less those kept in fp32
    assert q["matmuls_quantized"] + len(q["kept_fp32"]) == 7 * 2
    real = int8["real_headlines"]
    assert real["pearson"] >= real["min_correlation"]
    assert real["relative_mean_abs_dz"] <= real["max_relative_mean_abs_dz"]


def test_calibration_uses_training_headlines_only(trained_tiny, tiny_csv):
    from lola.data.upworthy import load_packages, split_packages
    from lola.export.smoothquant import calibration_texts, make_int8_config
    from lola.export.train import read_state

    calib, check, source = calibration_texts(read_state(trained_tiny), make_int8_config(min_check_headlines=4))
    splits = split_packages(load_packages(tiny_csv)[0])
    held_out = {p.headline.strip() for name in ("tune", "test") for p in splits[name]}
    assert calib and check and not set(calib) & set(check)
    assert not (set(calib) | set(check)) & held_out
    assert source["calibration"] == len(calib) and source["check"] == len(check)


def test_int8_is_rejected_without_its_calibration_data(trained_tiny):
    from lola.export.smoothquant import calibration_texts, make_int8_config
    from lola.export.train import read_state

    state = read_state(trained_tiny)
    state["data"] = {**state["data"], "path": "/nonexistent/packages.csv"}
    with pytest.raises(ExportValidationError, match="not found"):
        calibration_texts(state, make_int8_config())
    state["data"] = {"path": state["data"].get("path")}
    with pytest.raises(ExportValidationError, match="calibration"):
        calibration_texts(state, make_int8_config(min_check_headlines=10_000))


def test_failing_agreement_raises_never_warns(trained_tiny, exported_tiny):
    """Disagreement on real headlines is an ExportValidationError, and a NaN correlation fails too."""
    from lola.export.smoothquant import agreement, calibration_texts, check_agreement, encode_batches, make_int8_config
    from lola.export.train import load_merged, read_state

    _, tokenizer, state = load_merged(trained_tiny)
    _, check, _ = calibration_texts(read_state(trained_tiny), make_int8_config(min_check_headlines=4))
    batches, order = encode_batches(tokenizer, check, 32, 8)
    fp32, int8 = exported_tiny / "model.onnx", exported_tiny / "model.int8.onnx"
    strict = make_int8_config(max_relative_mean_abs_dz=1e-9)
    with pytest.raises(ExportValidationError, match="int8 disagrees with fp32"):
        check_agreement(fp32, int8, batches, order, strict)
    # the same model against itself passes with the default bar
    assert check_agreement(fp32, fp32, batches, order, make_int8_config())["pearson"] == pytest.approx(1.0)
    assert np.isnan(agreement(np.ones(5), np.ones(5))["pearson"])


def test_rejected_int8_fails_export_or_ships_without_it(tmp_path, trained_tiny):
    from lola.export.onnx_export import export_model
    from lola.export.smoothquant import make_int8_config

    strict = make_int8_config(max_relative_mean_abs_dz=1e-9)
    with pytest.raises(ExportValidationError, match="int8 disagrees"):
        export_model(trained_tiny, tmp_path / "strict", ("int8",), int8_config=strict)
    assert not (tmp_path / "strict").exists() and not (tmp_path / "strict.partial").exists()
    card = export_model(trained_tiny, tmp_path / "optional", ("int8",), int8_optional=True, int8_config=strict)
    assert card.variants == {"fp32": "model.onnx"} and "int8 disagrees" in card.validation["int8"]["rejected"]
    shipped = sorted(p.name for p in (tmp_path / "optional").iterdir())
    assert shipped == ["model.onnx", "model_card.json", "projection.json", "tokenizer.json"]


@pytest.mark.parametrize("overrides, fragment", [
    ({"alpha": 1.5}, "alpha"),
    ({"min_correlation": 2.0}, "min_correlation"),
    ({"max_relative_mean_abs_dz": 0.0}, "max_relative_mean_abs_dz"),
    ({"massive_ratio": 1.0}, "massive_ratio"),
    ({"check_headlines": 0}, "check_headlines"),
    ({"bogus": 1}, "bogus"),
])
def test_int8_config_is_validated(overrides, fragment):
    from lola.export.smoothquant import make_int8_config

    with pytest.raises(ConfigError, match=fragment):
        make_int8_config(**overrides)
    cfg = make_int8_config()
    with pytest.raises(Exception):
        cfg.alpha = 0.1  # frozen
