"""Merge the LoRA adapter, export to ONNX with optimum, validate against torch, write the model card.

Outputs of the ONNX graph (dynamic ``batch_size`` and ``sequence_length`` axes):

* ``logits`` ``[batch, 1]``: the standardised CTR score of the last non-pad token
  (exactly ``LlamaForSequenceClassification``'s pooling);
* ``embedding`` ``[batch, hidden]``: the attention-masked mean of the last hidden
  state, so serving can also hand out text embeddings.

Validation (a mismatch raises :class:`~lola.errors.ExportValidationError`):
ORT is run on at least two input shapes (``VALIDATION_SHAPES``, with padding) and
compared with the stock torch model. Tolerances, in units of the standardised
score (1.0 = one standard deviation of training CTR):

* fp32: ``|ort - torch| <= FP32_ATOL + FP32_RTOL * |torch|``, and the same on embeddings;
* int8 (CPU: SmoothQuant, then ORT dynamic int8, :mod:`lola.export.smoothquant`): mean
  ``|ort - torch| <= INT8_MEAN_ATOL`` and max ``<= INT8_MAX_ATOL`` on the score; quantisation
  error is real, so the bound is looser and is checked rather than assumed. On top of that,
  the int8 scores must track fp32 on real training-split headlines (Pearson correlation and
  relative mean ``|dz|`` bounds of :class:`~lola.export.smoothquant.Int8Config`): random tokens do not
  show the activation outliers that real text does;
* fp16 (GPU only): ``FP16_ATOL``.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from lola.errors import ConfigError, DataError, ExportValidationError, ModelIntegrityError
from lola.export.data import training_split
from lola.export.digest import file_sha256
from lola.export.card import CARD_FILE, CARD_FORMAT, ModelCard
from lola.export.projection import DEFAULT_DIM, PROJECTION_FILE, PROJECTION_KIND, fit_projection
from lola.export.serve import OnnxPriorModel, cuda_usable
from lola.export.smoothquant import Int8Config, make_int8_config

log = logging.getLogger("lola.export.onnx")

FP32_ATOL = 1e-3
FP32_RTOL = 1e-3
INT8_MEAN_ATOL = 0.25
INT8_MAX_ATOL = 1.0
FP16_ATOL = 5e-2
#: (batch, sequence length) pairs; rows get different real lengths so padding is exercised.
VALIDATION_SHAPES = ((1, 7), (4, 19), (8, 32))


def _embedding_model_class(base_cls):
    """A subclass whose forward also returns the masked mean of the last hidden state."""
    import torch
    from transformers.modeling_outputs import ModelOutput

    @dataclasses.dataclass
    class PriorOutput(ModelOutput):
        logits: torch.Tensor | None = None
        embedding: torch.Tensor | None = None

    class PriorWithEmbedding(base_cls):
        def forward(self, input_ids=None, attention_mask=None, **_):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            scores = self.score(hidden)
            # Same pooling as LlamaForSequenceClassification: the last non-pad token.
            non_pad = (input_ids != self.config.pad_token_id).to(torch.int32)
            positions = torch.arange(input_ids.shape[-1], device=input_ids.device, dtype=torch.int32)
            last = (positions * non_pad).argmax(-1)
            logits = scores[torch.arange(input_ids.shape[0], device=input_ids.device), last]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            embedding = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return PriorOutput(logits=logits, embedding=embedding)

    # optimum infers the library ("transformers") from the class's module.
    PriorWithEmbedding.__module__ = base_cls.__module__
    PriorWithEmbedding.__qualname__ = PriorWithEmbedding.__name__ = base_cls.__name__
    return PriorWithEmbedding


def _onnx_config(model):
    from optimum.exporters.onnx.model_configs import LlamaOnnxConfig

    class PriorOnnxConfig(LlamaOnnxConfig):
        @property
        def outputs(self):
            outputs = dict(super().outputs)
            outputs["embedding"] = {0: "batch_size"}
            return outputs

    return PriorOnnxConfig(model.config, task="text-classification")


def with_embedding(model):
    """A shallow copy of ``model`` whose forward also returns the embedding; it shares every parameter."""
    wrapper = copy.copy(model)
    wrapper.__class__ = _embedding_model_class(type(model))
    return wrapper


def export_onnx(model, out_dir: Path):
    """Export ``model`` (a merged classifier) to ``out_dir/model.onnx`` with optimum; return the wrapper.

    The fp32 model and the smoothed copy behind the int8 model both go through here, so
    they are the same graph up to the weights.
    """
    from optimum.exporters.onnx import onnx_export_from_model

    wrapper = with_embedding(model)
    onnx_export_from_model(
        wrapper,
        out_dir,
        task="text-classification",
        do_validation=False,  # our own validation compares with the stock torch model
        custom_onnx_configs={"model": _onnx_config(wrapper)},
    )
    return wrapper


def validation_inputs(pad_id: int, vocab_size: int, seed: int = 0):
    """Random token batches per VALIDATION_SHAPES, right-padded with varied real lengths."""
    rng = np.random.default_rng(seed)
    batches = []
    for batch, length in VALIDATION_SHAPES:
        ids = rng.integers(3, vocab_size, size=(batch, length), dtype=np.int64)
        ids[ids == pad_id] = pad_id + 1
        mask = np.ones((batch, length), dtype=np.int64)
        for row in range(1, batch):  # row 0 keeps the full length
            real = int(rng.integers(1, length + 1))
            ids[row, real:] = pad_id
            mask[row, real:] = 0
        batches.append((ids, mask))
    return batches


def _torch_outputs(model, wrapper, ids: np.ndarray, mask: np.ndarray):
    import torch

    with torch.inference_mode():
        t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)
        logits = model(input_ids=t_ids, attention_mask=t_mask).logits.float().numpy()
        embedding = wrapper(input_ids=t_ids, attention_mask=t_mask).embedding.float().numpy()
    return logits, embedding


def validate(onnx_path: Path, model, wrapper, pad_id: int, kind: str = "fp32", provider: str = "CPUExecutionProvider") -> dict:
    """Compare ORT with torch on VALIDATION_SHAPES; raise ExportValidationError on a mismatch."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=[provider])
    report = {"shapes": [list(s) for s in VALIDATION_SHAPES], "kind": kind}
    worst_logit, worst_embed, errors = 0.0, 0.0, []
    for ids, mask in validation_inputs(pad_id, model.config.vocab_size):
        t_logits, t_embed = _torch_outputs(model, wrapper, ids, mask)
        o_logits, o_embed = session.run(["logits", "embedding"], {"input_ids": ids, "attention_mask": mask})
        if o_logits.shape != t_logits.shape or o_embed.shape != t_embed.shape:
            raise ExportValidationError(
                f"{onnx_path.name}: output shapes {o_logits.shape}/{o_embed.shape} differ from torch "
                f"{t_logits.shape}/{t_embed.shape} at input shape {ids.shape}"
            )
        d_logit = np.abs(o_logits.astype(np.float64) - t_logits)
        d_embed = np.abs(o_embed.astype(np.float64) - t_embed)
        worst_logit, worst_embed = max(worst_logit, float(d_logit.max())), max(worst_embed, float(d_embed.max()))
        errors.append(float(d_logit.mean()))
        if kind == "fp32":
            bad = (d_logit > FP32_ATOL + FP32_RTOL * np.abs(t_logits)).any() or (
                d_embed > FP32_ATOL + FP32_RTOL * np.abs(t_embed)).any()
            if bad:
                raise ExportValidationError(
                    f"{onnx_path.name}: ORT differs from torch at input shape {ids.shape}: max |Δlogit| "
                    f"{d_logit.max():.3g}, max |Δembedding| {d_embed.max():.3g} (tolerance {FP32_ATOL} + {FP32_RTOL}·|x|)"
                )
    mean_err = float(np.mean(errors))
    if kind == "int8" and (mean_err > INT8_MEAN_ATOL or worst_logit > INT8_MAX_ATOL):
        raise ExportValidationError(
            f"{onnx_path.name}: int8 model differs from torch by mean {mean_err:.3g} / max {worst_logit:.3g} "
            f"(tolerance mean {INT8_MEAN_ATOL}, max {INT8_MAX_ATOL}, in score standard deviations)"
        )
    if kind == "fp16" and worst_logit > FP16_ATOL:
        raise ExportValidationError(f"{onnx_path.name}: fp16 max |Δlogit| {worst_logit:.3g} > {FP16_ATOL}")
    report.update(max_abs_diff_logits=worst_logit, max_abs_diff_embedding=worst_embed, mean_abs_diff_logits=mean_err,
                  tolerance={"fp32": {"atol": FP32_ATOL, "rtol": FP32_RTOL},
                             "int8": {"mean_atol": INT8_MEAN_ATOL, "max_atol": INT8_MAX_ATOL},
                             "fp16": {"atol": FP16_ATOL}}[kind])
    return report


def build_int8(merged, tokenizer, state: dict, staging: Path, pad_id: int, config: "Int8Config") -> dict:
    """SmoothQuant a deep copy of ``merged``, export it, quantise it (dynamic int8), validate it.

    Writes ``staging/model.int8.onnx`` and returns its validation report; raises
    ExportValidationError (and leaves no int8 file) when any check fails:

    * the random-token shapes of :func:`validate` against the stock torch model (the smoothing
      is exact, so any extra error is quantisation error);
    * agreement with the fp32 ONNX model on real training-split headlines (Pearson correlation
      and mean ``|dz|`` relative to the fp32 scores' spread, :func:`lola.export.smoothquant.check_agreement`).
    """
    from lola.export import smoothquant as sq

    target = staging / "model.int8.onnx"
    scratch = staging / "smoothed"  # the smoothed fp32 graph exists only to be quantised
    try:
        calib, check, source = sq.calibration_texts(state, config)
        max_length = int(state["config"]["max_length"])
        calib_batches, _ = sq.encode_batches(tokenizer, calib, max_length, config.batch_size)
        smoothed, summary, keep_fp32 = sq.smoothed_copy(merged, calib_batches, config)
        scratch.mkdir()
        export_onnx(smoothed, scratch)
        del smoothed
        n_nodes = sq.quantize_dynamic_int8(scratch / "model.onnx", target, keep_fp32)
        shutil.rmtree(scratch)
        report = validate(target, merged, with_embedding(merged), pad_id, "int8")
        check_batches, order = sq.encode_batches(tokenizer, check, max_length, config.batch_size)
        report["real_headlines"] = sq.check_agreement(staging / "model.onnx", target, check_batches, order, config)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        target.unlink(missing_ok=True)
        raise
    report["method"] = sq.METHOD
    report["quantization"] = {
        "alpha": config.alpha, "smooth_o_proj": config.smooth_o_proj, "calibration": source,
        "weights": "int8 symmetric, per output channel", "activations": "uint8, per tensor, dynamic",
        "matmuls_quantized": n_nodes, "kept_fp32": keep_fp32, "massive_ratio": config.massive_ratio,
        "smoothing": summary,
    }
    return report


def write_card(out_dir: Path, card: dict) -> ModelCard:
    """Add the sha256 of every file in ``out_dir``, validate as a ModelCard and write model_card.json."""
    files = {}
    for path in sorted(out_dir.rglob("*")):
        if path.is_file() and path.name != CARD_FILE:
            files[str(path.relative_to(out_dir))] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    card = {**card, "files": files}
    typed = ModelCard.parse(card, str(out_dir / CARD_FILE))  # never write a card the readers would refuse
    (out_dir / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=False))
    return typed


def export_model(
    model_dir: str | Path,
    out_dir: str | Path,
    quantize: tuple[str, ...] = ("int8",),
    metrics: dict | None = None,
    overwrite: bool = True,
    int8_optional: bool = False,
    int8_config: "Int8Config | None" = None,
) -> dict:
    """Merge (``merge_and_unload``), export, validate, quantise; return the model card.

    Parameters
    ----------
    model_dir
        Training folder (``lola priors train``).
    out_dir
        Where the model goes; built in ``<out_dir>.partial`` and moved there only once valid.
    quantize
        Extra variants: ``"int8"`` (CPU, SmoothQuant + dynamic int8) and/or ``"fp16"`` (GPU).
    metrics
        Stored in the card as is.
    overwrite
        Replace an existing ``out_dir``.
    int8_optional
        A rejected int8 model is left out (the card says why) instead of failing the export.
    int8_config
        How int8 is built and accepted (default :class:`lola.export.smoothquant.Int8Config`).
    """
    for q in quantize:
        if q not in ("int8", "fp16"):
            raise ConfigError(f"--quantize must be int8 or fp16, got {q!r}")
    if "fp16" in quantize and not cuda_usable():
        raise ConfigError("--quantize fp16 is for GPU serving and is validated on a GPU; no usable CUDA device here")
    out_dir = Path(out_dir)
    from lola.export.train import load_merged

    started = time.monotonic()
    merged, tokenizer, state = load_merged(model_dir)  # raises DataError if model_dir is not a training output
    if out_dir.exists() and not overwrite:
        raise ConfigError(f"--out {out_dir} exists")
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)

    try:
        wrapper = export_onnx(merged, staging)
        tokenizer.backend_tokenizer.save(str(staging / "tokenizer.json"))

        pad_id = int(tokenizer.pad_token_id)
        validation = {"fp32": validate(staging / "model.onnx", merged, wrapper, pad_id, "fp32")}
        variants = {"fp32": "model.onnx"}
        if "int8" in quantize:
            try:
                validation["int8"] = build_int8(merged, tokenizer, state, staging, pad_id,
                                                int8_config or make_int8_config())
                variants["int8"] = "model.int8.onnx"
            except ExportValidationError as exc:
                if not int8_optional:
                    raise
                # build-default asks for int8 as optional: the invalid file is not shipped, the card says why.
                log.error("int8 variant rejected and not shipped: %s", exc)
                validation["int8"] = {"rejected": str(exc)}
        if "fp16" in quantize:  # pragma: no cover - needs a GPU
            from optimum.exporters.onnx import onnx_export_from_model

            fp16_dir = staging / "fp16"
            onnx_export_from_model(wrapper.half().cuda(), fp16_dir, task="text-classification", do_validation=False,
                                   device="cuda", dtype="fp16", custom_onnx_configs={"model": _onnx_config(wrapper)})
            (fp16_dir / "model.onnx").rename(staging / "model.fp16.onnx")
            shutil.rmtree(fp16_dir)
            wrapper = wrapper.float().cpu()
            merged = merged.float().cpu()
            validation["fp16"] = validate(staging / "model.fp16.onnx", merged, wrapper, pad_id, "fp16",
                                          provider="CUDAExecutionProvider")
            variants["fp16"] = "model.fp16.onnx"

        config = state["config"]
        card = {
            "format": CARD_FORMAT,
            "name": "lola-ctr-prior",
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "task": "per-headline CTR regression (LOLA appendix F)",
            "base": state["base_description"],
            "base_ref": state["base"],
            "source_training_dir": str(Path(model_dir).resolve()),
            "architecture": "LlamaForSequenceClassification, num_labels=1, last non-pad token, LoRA merged",
            "data": state["data"],
            "hyperparameters": config,
            "text_mode": config["text_mode"],
            "target": config.get("target", "ctr"),
            "target_scaling": state["target_scaling"],
            "week_level_fit": state.get("week_level_fit"),
            "training": {k: state[k] for k in ("steps_done", "steps_planned", "stopped_early", "train_seconds",
                                                "device", "dtype", "final_loss_mean_last_20")},
            "tokenizer": {"file": "tokenizer.json", "pad_token_id": pad_id, "padding_side": "right",
                          "max_length": int(config["max_length"])},
            "inputs": {"input_ids": ["batch_size", "sequence_length"], "attention_mask": ["batch_size", "sequence_length"]},
            "outputs": {"logits": ["batch_size", 1], "embedding": ["batch_size", int(merged.config.hidden_size)]},
            "variants": variants,
            "validation": validation,
            "metrics": metrics or {},
            "export_seconds": round(time.monotonic() - started, 1),
            "versions": _versions(),
        }
        for stray in staging.glob("*.json"):
            if stray.name not in ("tokenizer.json",):
                stray.unlink()  # optimum's config.json: serving needs only the card
        card = write_card(staging, card)
        try:  # LLM-LinUCB's arm features (lola.export.projection), fitted on the train split
            card = add_projection(staging)
        except DataError as exc:
            log.warning("no arm-feature projection (LLM-LinUCB arms will use hashed text features): %s", exc)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # never leave a half-written model behind
        raise
    # Replace the old model only now that the new one passed validation.
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    log.info("exported %s with %s in %.0f s", out_dir, sorted(variants), time.monotonic() - started)
    return card


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "peft", "optimum", "optimum-onnx", "onnxruntime-gpu", "onnxruntime", "tokenizers"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def add_projection(model_dir: str | Path, data_csv: str | Path | None = None, dim: int = DEFAULT_DIM,
                   batch_size: int = 64) -> ModelCard:
    """Fit :mod:`lola.export.projection` on the fp32 embeddings of the train-split headlines of
    the training CSV (the card names it; its sha256 is checked, so the split is the training
    run's), write ``projection.json`` and re-hash the card. DataError when the CSV is missing."""
    model_dir = Path(model_dir)
    prior = OnnxPriorModel(model_dir, provider="cpu", variant="fp32", batch_size=batch_size, readout=False)
    if prior.embedding_dim is None:
        raise ModelIntegrityError(f"{model_dir}: this export has no embedding output to project")
    path, train = training_split(prior.card.data, data_csv)
    headlines = sorted({p.headline for p in train})  # the replay's train texts (lola.replay.run)
    if len(headlines) < 2:
        raise DataError(f"{path}: {len(headlines)} train-split headline(s); a projection needs 2 or more")
    proj = fit_projection(prior.embed(headlines), dim)
    (model_dir / PROJECTION_FILE).write_text(json.dumps(proj.to_json()))
    card = json.loads((model_dir / CARD_FILE).read_text())
    card["projection"] = {"file": PROJECTION_FILE, "kind": PROJECTION_KIND, "dim": proj.dim,
                          "embedding_dim": proj.embedding_dim, "embedding_variant": "fp32",
                          "fitted_on": f"{len(headlines)} train-split headlines of {path} (sha256 checked)"}
    log.info("arm-feature projection: %d -> %d on %d train headlines", proj.embedding_dim, proj.dim, len(headlines))
    return write_card(model_dir, card)  # re-hashes every file, projection.json included


def update_metrics(out_dir: str | Path, metrics: dict) -> ModelCard:
    """Rewrite the card with ``metrics`` (the file hashes are unchanged, the card hash changes)."""
    out_dir = Path(out_dir)
    card = json.loads((out_dir / CARD_FILE).read_text())
    card["metrics"] = metrics
    typed = ModelCard.parse(card, str(out_dir / CARD_FILE))
    (out_dir / CARD_FILE).write_text(json.dumps(card, indent=2))
    return typed
