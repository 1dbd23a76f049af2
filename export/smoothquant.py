"""SmoothQuant + dynamic int8 for the CPU variant of the CTR prior (Xiao et al. 2023).

Why: ONNX Runtime's dynamic int8 MatMul (``MatMulInteger``/``DynamicQuantizeMatMul``) runs
u8 x s8 GEMMs (VNNI/AMX on Intel CPUs) and is several times faster than fp32, but it
quantises each activation tensor with one scale. Llama activations have a few outlier
channels that are 10-100x larger than the rest, so one per-tensor scale leaves the
other channels with a handful of levels and the scores drift far from fp32.

SmoothQuant moves that range into the weights, which are quantised per output channel
and tolerate it: for each input channel ``j`` of a linear layer,
``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)``; the activation is divided by ``s`` (folded
into the operation that produces it) and the weight columns are multiplied by ``s``. The
product ``X W^T`` is unchanged, exactly, in real arithmetic. The folds used here:

* ``input_layernorm`` weight ``/= s``, ``q/k/v_proj`` columns ``*= s``;
* ``post_attention_layernorm`` weight ``/= s``, ``gate/up_proj`` columns ``*= s``;
* ``down_proj`` input ``act(gate) * up``: ``up_proj`` rows ``/= s`` (the product is linear
  in the up branch), ``down_proj`` columns ``*= s``;
* ``o_proj`` input (optional): attention output is a convex mix of ``v`` rows, so
  ``v_proj`` rows ``/= s``, ``o_proj`` columns ``*= s``; with grouped-query attention one
  ``v`` channel feeds every query head of its group, so ``s`` is shared across the group.

``max|X_j|`` comes from forward hooks on a calibration set of real training-split
headlines, batched and right-padded like serving (padded positions are quantised too).
The transform is applied to a deep copy of the merged model; the fp32 export never sees it.

What smoothing cannot fix: "massive activations" (one channel of one token, often the
first, thousands of times the median). A per-channel scale sized for that token leaves
the channel's other tokens near zero, and inflates the weight column so much that the
per-output-channel weight scales lose the other columns. Projections whose input shows
one (``Int8Config.massive_ratio``) are left in fp32: on SmolLM2, ``down_proj`` of layers 11
and 28 (2 of 210 MatMuls).

How alpha was chosen (quick SmolLM2 model, 256 calibration headlines from the train split,
agreement with fp32 ORT measured on 256 *tune*-split headlines, 2026-12-05, Intel Xeon with
AVX-512 VNNI/AMX): Pearson r of int8 vs fp32 scores, all 210 projections quantised:
no smoothing 0.645; alpha 0.5: 0.864; 0.65: 0.961; 0.75: 0.969; 0.85: 0.971. A torch emulation
of ORT's arithmetic (it reproduced 0.971 as 0.9709) then showed ``down_proj`` to carry most
of the remaining error (leaving every ``down_proj`` in fp32: 0.995, but that costs a quarter of
the FLOPs), and, with the two massive ``down_proj`` kept fp32, alpha 0.75 (0.980) beat 0.85
(0.975). Per-site alpha for ``down_proj`` (0.5-1.0) was worse than one alpha; smoothing
``o_proj`` changed r by 0.001.
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from lola.errors import ConfigError, ExportValidationError

log = logging.getLogger("lola.export.smoothquant")

METHOD = "smoothquant+dynamic int8"
#: The projections of each Llama block: the only MatMuls with constant weights worth quantising.
#: Quantising the rotary-embedding MatMul or the attention score MatMuls wrecks the model.
LINEAR_NODE = re.compile(r"(q|k|v|o|gate|up|down)_proj/MatMul$")


class Int8Config(BaseModel):
    """How the int8 variant is built and when it is accepted. Frozen.

    Parameters
    ----------
    alpha
        Migration strength: 0 leaves activations alone, 1 moves all their range into the
        weights. 0.75: chosen on tune-split headlines (module docstring).
    smooth_o_proj
        Also smooth the ``o_proj`` input (through ``v_proj``). Off by default: measured on
        SmolLM2 it changed the tune-split correlation by 0.001 (0.968 -> 0.969), i.e. nothing.
    massive_ratio
        A projection whose input has a channel with calibration ``max|x|`` above this many times
        the median channel's stays fp32. Such "massive activations" sit on single tokens, so a
        per-channel scale cannot migrate them and the per-tensor int8 scale they force drowns
        every other token (SmolLM2: ``down_proj`` of layers 11 and 28, ratios ~1500 and ~300).
    calibration_headlines
        Training-split headlines whose activation maxima set the smoothing scales.
    check_headlines
        Other training-split headlines on which int8 must agree with fp32.
    min_check_headlines
        Fewer usable check headlines than this and the int8 model is rejected (an agreement
        measured on a handful of texts proves nothing).
    min_correlation
        Pearson correlation of int8 and fp32 scores on the check headlines, at least. 0.97
        rejects what failed on SmolLM2 (plain dynamic int8 0.65, alpha 0.5 0.86) with room
        below what passes (0.986 on the check headlines).
    max_relative_mean_abs_dz
        Mean ``|z_int8 - z_fp32|`` over the standard deviation of the fp32 scores on the check
        headlines, at most (relative, because a quick model's scores spread far less than its
        training targets: std 0.15 of a training std on SmolLM2).
    batch_size
        Rows per batch for calibration and the check (serving batches, sorted by length).
    seed
        Which headlines are drawn.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = 0.75
    smooth_o_proj: bool = False
    massive_ratio: float = 100.0
    calibration_headlines: int = 256
    check_headlines: int = 256
    min_check_headlines: int = 16
    min_correlation: float = 0.97
    max_relative_mean_abs_dz: float = 0.25
    batch_size: int = 32
    seed: int = 0

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {value}")
        return value

    @field_validator("calibration_headlines", "check_headlines", "min_check_headlines", "batch_size")
    @classmethod
    def _positive(cls, value: int, info) -> int:
        if value < 1:
            raise ValueError(f"{info.field_name} must be >= 1, got {value}")
        return value

    @field_validator("min_correlation")
    @classmethod
    def _correlation(cls, value: float) -> float:
        if not -1.0 <= value <= 1.0:
            raise ValueError(f"min_correlation must be in [-1, 1], got {value}")
        return value

    @field_validator("max_relative_mean_abs_dz")
    @classmethod
    def _dz(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"max_relative_mean_abs_dz must be > 0, got {value}")
        return value

    @field_validator("massive_ratio")
    @classmethod
    def _ratio(cls, value: float) -> float:
        if value <= 1:
            raise ValueError(f"massive_ratio must be > 1, got {value}")
        return value


def make_int8_config(**overrides) -> Int8Config:
    """An :class:`Int8Config`; a bad value raises ConfigError with one clear line."""
    try:
        return Int8Config(**overrides)
    except ValidationError as exc:
        raise ConfigError.from_validation(exc, "invalid int8 setting") from None


# -- calibration data ---------------------------------------------------------
def calibration_texts(state: dict, config: Int8Config) -> tuple[list[str], list[str], dict]:
    """Disjoint calibration and check texts from the training split of the run's own CSV.

    Only the train split is used (the test split stays untouched for ``lola priors eval``).
    Texts are prepared exactly as for training (``text_mode``). Raises ExportValidationError
    when the CSV is gone or changed, so int8 is rejected rather than calibrated on other data.
    """
    from lola.errors import DataError
    from lola.export.data import build_examples, training_split

    try:
        path, train = training_split(state.get("data") or {})
    except DataError as exc:
        raise ExportValidationError(f"int8 needs calibration headlines: {exc}") from None
    texts = sorted(set(build_examples(train, state["config"]["text_mode"], 0, False).texts))
    texts = [t for t in texts if t]
    order = np.random.default_rng(config.seed).permutation(len(texts))
    n_check = min(config.check_headlines, len(texts) // 2)
    check = [texts[i] for i in order[:n_check]]
    calib = [texts[i] for i in order[n_check : n_check + config.calibration_headlines]]
    if n_check < config.min_check_headlines or not calib:
        raise ExportValidationError(
            f"int8 needs calibration headlines: only {len(texts)} distinct training headlines "
            f"({n_check} for the check, at least {config.min_check_headlines} required)"
        )
    source = {"csv": str(path), "split": "train", "calibration": len(calib), "check": n_check, "seed": config.seed}
    return calib, check, source


def encode_batches(tokenizer, texts: Sequence[str], max_length: int, batch_size: int):
    """Length-sorted, right-padded int64 ``(input_ids, attention_mask)`` batches, as serving builds them.

    Returns the batches and the sort order (``scores[order] = concatenated batch scores``).
    """
    order = np.argsort([len(t) for t in texts], kind="stable")
    batches = []
    for start in range(0, len(texts), batch_size):
        chunk = [texts[i] for i in order[start : start + batch_size]]
        enc = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        batches.append((enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)))
    return batches, order


# -- the transform ------------------------------------------------------------
def activation_absmax(model, batches) -> dict[str, "object"]:
    """Per-input-channel ``max|x|`` of every q/gate/down/o projection input, over all positions."""
    import torch

    stats: dict[str, torch.Tensor] = {}
    handles = []

    def hook(name):
        def record(_module, args):
            x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0).float()
            stats[name] = torch.maximum(stats[name], x) if name in stats else x
        return record

    for name, module in model.named_modules():
        if name.endswith(("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj")):
            handles.append(module.register_forward_pre_hook(hook(name)))
    try:
        with torch.inference_mode():
            for ids, mask in batches:
                model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    finally:
        for h in handles:
            h.remove()
    if not stats:
        raise ExportValidationError("no Llama projections found to smooth")
    return stats


def _scales(act_max, weights, alpha: float):
    """``s = act^alpha / w^(1-alpha)`` per input channel, in float64; 1 where either side is 0."""
    import torch

    w_max = torch.stack([w.detach().abs().double().amax(0) for w in weights]).amax(0)
    return _migration(act_max.double(), w_max, alpha)


def _migration(a, w, alpha: float):
    """SmoothQuant's ``a^alpha / w^(1-alpha)`` element-wise (float64); 1 where either side is 0."""
    import torch

    s = a.clamp(min=1e-8).pow(alpha) / w.clamp(min=1e-8).pow(1.0 - alpha)
    return torch.where((a > 0) & (w > 0), s, torch.ones_like(s))


def _scale_cols(linear, s) -> None:
    linear.weight.data = (linear.weight.data.double() * s[None, :]).to(linear.weight.dtype)


def _scale_rows(linear, inv) -> None:
    linear.weight.data = (linear.weight.data.double() * inv[:, None]).to(linear.weight.dtype)
    if linear.bias is not None:
        linear.bias.data = (linear.bias.data.double() * inv).to(linear.bias.dtype)


def smooth_model(model, stats: dict, alpha: float, smooth_o_proj: bool = False) -> dict:
    """Apply SmoothQuant in place; the forward function is unchanged up to float rounding (tested).

    Parameters
    ----------
    model
        A Llama classifier to modify: pass a deep copy, never the model the fp32 export uses.
    stats
        :func:`activation_absmax` of the *unsmoothed* model.
    alpha
        Migration strength in [0, 1].
    smooth_o_proj
        Also fold scales through ``v_proj`` into ``o_proj`` (shared within each KV group).

    Returns
    -------
    dict
        Layers smoothed and the largest projection-input ``max|x|`` before and after.
    """
    import torch

    summary = {"layers": 0, "max_activation_absmax_before": 0.0, "max_activation_absmax_after": 0.0}
    with torch.no_grad():
        for name, module in model.named_modules():
            if not (hasattr(module, "self_attn") and hasattr(module, "mlp") and hasattr(module, "input_layernorm")):
                continue
            attn, mlp = module.self_attn, module.mlp
            pairs = []
            # attention input: folded into input_layernorm
            s = _scales(stats[f"{name}.self_attn.q_proj"], [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight], alpha)
            module.input_layernorm.weight.data = (module.input_layernorm.weight.data.double() / s).float()
            for lin in (attn.q_proj, attn.k_proj, attn.v_proj):
                _scale_cols(lin, s)
            pairs.append((stats[f"{name}.self_attn.q_proj"], s))
            # MLP input: folded into post_attention_layernorm
            s = _scales(stats[f"{name}.mlp.gate_proj"], [mlp.gate_proj.weight, mlp.up_proj.weight], alpha)
            module.post_attention_layernorm.weight.data = (module.post_attention_layernorm.weight.data.double() / s).float()
            for lin in (mlp.gate_proj, mlp.up_proj):
                _scale_cols(lin, s)
            pairs.append((stats[f"{name}.mlp.gate_proj"], s))
            # down_proj input = act(gate) * up: folded into up_proj's output rows
            s = _scales(stats[f"{name}.mlp.down_proj"], [mlp.down_proj.weight], alpha)
            _scale_rows(mlp.up_proj, 1.0 / s)
            _scale_cols(mlp.down_proj, s)
            pairs.append((stats[f"{name}.mlp.down_proj"], s))
            if smooth_o_proj:
                s_kv, s_o = _o_proj_scales(attn, stats[f"{name}.self_attn.o_proj"], alpha)
                _scale_rows(attn.v_proj, 1.0 / s_kv)
                _scale_cols(attn.o_proj, s_o)
                pairs.append((stats[f"{name}.self_attn.o_proj"], s_o))
            for act, sc in pairs:
                summary["max_activation_absmax_before"] = max(summary["max_activation_absmax_before"], float(act.max()))
                summary["max_activation_absmax_after"] = max(summary["max_activation_absmax_after"],
                                                             float((act.double() / sc).max()))
            summary["layers"] += 1
    if summary["layers"] == 0:
        raise ExportValidationError("no Llama decoder layers found to smooth")
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()}


def head_dim_of(attn) -> int:
    """Head dimension of a Llama attention module (attribute name differs across transformers versions)."""
    dim = getattr(attn, "head_dim", None)
    if dim is None:
        dim = attn.config.hidden_size // attn.config.num_attention_heads
    return int(dim)


def _o_proj_scales(attn, act_max, alpha: float):
    """Scales for the ``o_proj`` input, shared by the query heads that read one KV head.

    Channel ``h * d + i`` of the attention output mixes channel ``(h // group) * d + i`` of
    ``v``, so a scale folded into ``v_proj``'s rows must be the same for every query head
    of the group. Returns ``(s_kv, s_o)``: per ``v`` channel and per ``o_proj`` input channel.
    """
    d = head_dim_of(attn)
    n_q = attn.o_proj.weight.shape[1] // d
    n_kv = attn.v_proj.weight.shape[0] // d
    group = n_q // n_kv
    # [n_kv, group, d]: the group axis collects the query heads sharing one KV head
    a = act_max.double().reshape(n_kv, group, d).amax(1)
    w = attn.o_proj.weight.detach().abs().double().amax(0).reshape(n_kv, group, d).amax(1)
    s_kv = _migration(a, w, alpha)
    s_o = s_kv[:, None, :].expand(n_kv, group, d).reshape(-1)
    return s_kv.reshape(-1), s_o


def smoothed_copy(merged, batches, config: Int8Config):
    """A deep copy of ``merged`` with SmoothQuant applied, the summary of the scales, and the
    projections to keep in fp32 (:func:`massive_projections` of the unsmoothed statistics)."""
    stats = activation_absmax(merged, batches)
    smoothed = copy.deepcopy(merged)
    summary = smooth_model(smoothed, stats, config.alpha, config.smooth_o_proj)
    return smoothed, summary, massive_projections(stats, config.massive_ratio)


# -- quantisation and the agreement check -------------------------------------
def massive_projections(stats: dict, ratio: float) -> list[str]:
    """Module names (``model.layers.11.mlp.down_proj``) whose input has massive activations.

    One statistic feeds several projections (``q_proj``'s input is also ``k_proj``'s and
    ``v_proj``'s), so all of them are named.
    """
    readers = {"self_attn.q_proj": ("q_proj", "k_proj", "v_proj"), "mlp.gate_proj": ("gate_proj", "up_proj"),
               "mlp.down_proj": ("down_proj",), "self_attn.o_proj": ("o_proj",)}
    out = []
    for name, act in sorted(stats.items()):
        median = float(act.median())
        if median > 0 and float(act.max()) > ratio * median:
            for site, projs in readers.items():
                if name.endswith(site):
                    prefix = name[: -len(site.split(".")[-1])]
                    out.extend(prefix + p for p in projs)
    return out


def _node_key(name: str) -> tuple[str, str] | None:
    """``(layer, projection)`` of an ONNX node (``/model/layers.3/mlp/down_proj/MatMul``) or module name."""
    match = re.search(r"layers[./](\d+)[./].*?(\w+_proj)", name)
    return (match.group(1), match.group(2)) if match else None


class _DropMessage(logging.Filter):
    """Drops log records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quantize_dynamic_int8(src: Path, dst: Path, keep_fp32: Sequence[str] = ()) -> int:
    """Per-output-channel int8 weights, dynamic per-tensor uint8 activations, on the block projections.

    ``keep_fp32``: module names of projections left in fp32 (see :func:`massive_projections`).
    Returns how many MatMuls were quantised.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src), load_external_data=False).graph
    skip = {_node_key(n) for n in keep_fp32}
    nodes = [n.name for n in graph.node
             if n.op_type == "MatMul" and LINEAR_NODE.search(n.name) and _node_key(n.name) not in skip]
    if not nodes:
        raise ExportValidationError(f"{src.name}: no Llama projection MatMuls found to quantise")
    # The quantiser logs one INFO line per unquantised tensor through the root logger (hundreds);
    # silence INFO for the call only. Its WARNING advising shape-inference pre-processing is
    # dropped too: the graph is quantised per named MatMul, and validation checks the result.
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.INFO))
    advice = _DropMessage("pre-processing before quantization")
    logging.root.addFilter(advice)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, nodes_to_quantize=nodes,
                         extra_options={"MatMulConstBOnly": True})
    finally:
        logging.root.removeFilter(advice)
        logging.disable(previous)
    return len(nodes)


def ort_scores(onnx_path: Path, batches, order) -> np.ndarray:
    """The ``logits`` of an ONNX model on pre-encoded batches, back in text order (float64)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    z = np.concatenate([session.run(["logits"], {"input_ids": i, "attention_mask": m})[0][:, 0] for i, m in batches])
    out = np.empty(len(z), dtype=np.float64)
    out[order] = z
    return out


def agreement(fp32: np.ndarray, int8: np.ndarray) -> dict:
    """Pearson and Spearman correlation and ``|dz|`` statistics of int8 against fp32 scores."""
    def ranks(x):
        r = np.empty(len(x))
        r[np.argsort(x, kind="stable")] = np.arange(len(x))
        return r

    dz = np.abs(int8 - fp32)
    with np.errstate(invalid="ignore", divide="ignore"):
        pearson = float(np.corrcoef(fp32, int8)[0, 1]) if len(fp32) > 1 else float("nan")
        spearman = float(np.corrcoef(ranks(fp32), ranks(int8))[0, 1]) if len(fp32) > 1 else float("nan")
    std = float(np.std(fp32))
    return {"n": int(len(fp32)), "pearson": pearson, "spearman": spearman, "mean_abs_dz": float(dz.mean()),
            "max_abs_dz": float(dz.max()), "fp32_score_std": std,
            "relative_mean_abs_dz": float(dz.mean() / std) if std > 0 else float("inf")}


def check_agreement(fp32_path: Path, int8_path: Path, batches, order, config: Int8Config) -> dict:
    """int8 vs fp32 ORT scores on real headlines; raise ExportValidationError below the bar.

    Parameters
    ----------
    fp32_path, int8_path
        The two ONNX models.
    batches, order
        From :func:`encode_batches` on the check headlines.
    config
        ``min_correlation`` and ``max_relative_mean_abs_dz`` are the bar.

    Returns
    -------
    dict
        :func:`agreement` plus the bar. A NaN correlation (constant scores) fails: agreement
        that cannot be measured is not shown.
    """
    report = agreement(ort_scores(fp32_path, batches, order), ort_scores(int8_path, batches, order))
    report.update(min_correlation=config.min_correlation, max_relative_mean_abs_dz=config.max_relative_mean_abs_dz)
    ok = (report["pearson"] >= config.min_correlation
          and report["relative_mean_abs_dz"] <= config.max_relative_mean_abs_dz)
    if not ok:  # NaN compares False, so it lands here
        raise ExportValidationError(
            f"{int8_path.name}: int8 disagrees with fp32 on {report['n']} real training headlines: Pearson "
            f"{report['pearson']:.4f} (need >= {config.min_correlation}), mean |dz| {report['mean_abs_dz']:.4g} = "
            f"{report['relative_mean_abs_dz']:.3f} fp32 score std (need <= {config.max_relative_mean_abs_dz})"
        )
    return report
