"""CLI commands of lola.export: ``lola priors train|export|readout|projection|score|eval|build-default``.

Heavy imports (torch, transformers, onnxruntime) stay inside the command bodies.
"""

from __future__ import annotations

import json
import logging
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from lola.errors import ConfigError, DataError
from lola.export.config import CALIBRATIONS, OBJECTIVES

priors_app = typer.Typer(
    help="LLM CTR priors: LoRA fine-tune, ONNX export, scoring and evaluation (LOLA section 3.3, appendix F).",
    no_args_is_help=True,
)


class Quantize(str, Enum):
    int8 = "int8"
    fp16 = "fp16"


class TextModeOpt(str, Enum):
    headline = "headline"
    headline_context = "headline_context"


# Typer options as Enums of the one list of names (lola.export.config; pydantic only, cheap to import).
LossOpt = Enum("LossOpt", {name: name for name in OBJECTIVES}, type=str)


LOSS_HELP = ("mse (default), or a within-test ranking loss: listnet (softmax over each test's headlines, "
             "impression-weighted) or ranknet (significant pairs); batches are then whole tests.")


class TargetOpt(str, Enum):
    ctr = "ctr"
    level_deviation = "level_deviation"


TARGET_HELP = ("level_deviation (default: CTR minus its test's mean, week level added back when serving) "
               "or ctr (the paper's absolute CTR).")


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="lola: %(message)s")
    for noisy in ("transformers", "optimum", "torch", "onnxruntime", "peft"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _need_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")


def _default_data(data: Optional[Path]) -> Path:
    if data is not None:
        return data
    from lola.paths import upworthy_csv

    return upworthy_csv()


def _train_config(quick: bool, **overrides):
    from lola.export.config import make_config

    return make_config("quick" if quick else "full", **{k: v for k, v in overrides.items() if v is not None})


@priors_app.command("train")
def train_cmd(
    data: Optional[Path] = typer.Option(None, "--data", help="Upworthy package CSV (default: the shared dev CSV)."),
    out: Path = typer.Option(..., "--out", help="Training output folder (adapter, checkpoints, train_state.json)."),
    base: Optional[str] = typer.Option(None, "--base", help="HF Llama checkpoint folder or .gguf (default: SmolLM2-135M)."),
    quick: bool = typer.Option(False, "--quick", help="The <=15 min CPU profile (subset, short inputs, few hundred steps)."),
    text_mode: Optional[TextModeOpt] = typer.Option(None, "--text-mode", help="headline (paper) or headline_context."),
    target: Optional[TargetOpt] = typer.Option(None, "--target", help=TARGET_HELP),
    max_steps: Optional[int] = typer.Option(None, "--max-steps"),
    epochs: Optional[float] = typer.Option(None, "--epochs"),
    learning_rate: Optional[float] = typer.Option(None, "--lr"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    max_length: Optional[int] = typer.Option(None, "--max-length"),
    train_limit: Optional[int] = typer.Option(None, "--train-limit", help="Seeded subset of training headlines."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    loss: Optional[LossOpt] = typer.Option(None, "--loss", help=LOSS_HELP),
    loss_mix: Optional[float] = typer.Option(None, "--loss-mix", help="Weight of MSE mixed into a ranking loss."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Resume from the newest matching checkpoint."),
) -> None:
    """LoRA fine-tune a Llama CTR regressor on the train split."""
    data = _default_data(data)
    _need_file(data, "--data CSV")
    config = _train_config(quick, text_mode=text_mode.value if text_mode else None,
                           target=target.value if target else None, max_steps=max_steps,
                           epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
                           max_length=max_length, train_limit=train_limit, seed=seed,
                           loss=loss.value if loss else None, loss_mix=loss_mix)
    _logging()
    from lola.export.train import train

    state = train(data, out, config, base=base, resume=resume)
    typer.echo(json.dumps({k: state[k] for k in ("steps_done", "steps_planned", "stopped_early", "train_seconds",
                                                   "final_loss_mean_last_20")}))


@priors_app.command("export")
def export_cmd(
    model: Path = typer.Option(..., "--model", help="Training output folder (from `lola priors train`)."),
    out: Path = typer.Option(..., "--out", help="Folder for the ONNX model, tokenizer and model card."),
    quantize: Optional[list[Quantize]] = typer.Option(None, "--quantize", help="Also write int8 (CPU) or fp16 (GPU)."),
) -> None:
    """Merge LoRA, export to ONNX with optimum, validate ORT against torch, write model_card.json."""
    if not model.is_dir():
        raise DataError(f"--model {model} is not a folder")
    _logging()
    from lola.export.onnx_export import export_model

    card = export_model(model, out, tuple(q.value for q in quantize or ()))
    typer.echo(json.dumps({"out": str(out), "variants": card.variants,
                           "validation": {k: v["max_abs_diff_logits"] for k, v in card.validation.items()
                                          if "max_abs_diff_logits" in v}}))


ObjectiveOpt = LossOpt
CalibrateOpt = Enum("CalibrateOpt", {name: name for name in CALIBRATIONS}, type=str)


@priors_app.command("readout")
def readout_cmd(
    model: Path = typer.Option(..., "--model", help="Exported model folder (from `lola priors export`)."),
    data: Optional[Path] = typer.Option(None, "--data", help="The training CSV (default: the one the card names)."),
    objective: ObjectiveOpt = typer.Option(ObjectiveOpt.mse, "--objective",
                                           help="mse (ridge, the default), listnet (softmax over each test's "
                                                "headlines) or ranknet (significant pairs)."),
    mix: float = typer.Option(0.0, "--mix", help="Weight of an MSE term mixed into listnet/ranknet, in [0, 1]."),
    calibrate: CalibrateOpt = typer.Option(CalibrateOpt.none, "--calibrate",
                                           help="Rescale within-test gaps on tune: none, slope or spread."),
    temperature: float = typer.Option(1.0, "--temperature", help="listnet: temperature of the target softmax."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Embedding cache file (.npz), e.g. runs/emb.npz."),
) -> None:
    """Refit the linear readout on the model's embeddings of every training headline; penalty chosen on tune."""
    _need_file(model / "model_card.json", "--model model_card.json")
    if data is not None:
        _need_file(data, "--data CSV")
    from lola.export.readout import ReadoutOptions

    options = ReadoutOptions(objective.value, mix, calibrate.value, temperature)
    _logging()
    from lola.export.readout import fit_readout

    entry = fit_readout(model, data, options=options, cache=cache)
    typer.echo(json.dumps({k: entry.get(k) for k in ("kind", "alpha", "l2", "gamma", "chosen_by", "tune_ranking",
                                                     "train_headlines", "tune_headlines",
                                                     "network_head_tune_weighted_mse", "fit_seconds")}))


@priors_app.command("projection")
def projection_cmd(
    model: Path = typer.Option(..., "--model", help="Exported model folder (from `lola priors export`)."),
    data: Optional[Path] = typer.Option(None, "--data", help="The training CSV (default: the one the card names)."),
    dim: int = typer.Option(16, "--dim", min=1, max=64, help="Components kept (LLM-LinUCB arm features)."),
) -> None:
    """(Re)fit the embedding projection of LLM-LinUCB's arm features on the train-split headlines
    (`lola priors export` does it; this adds one to a model exported before)."""
    _need_file(model / "model_card.json", "--model model_card.json")
    if data is not None:
        _need_file(data, "--data CSV")
    _logging()
    from lola.export.onnx_export import add_projection

    card = add_projection(model, data, dim)
    typer.echo(json.dumps(card.projection.model_dump(mode="json") if card.projection else None))


@priors_app.command("readout-study")
def readout_study_cmd(
    model: Path = typer.Option(..., "--model", help="Exported model folder with its (default) readout."),
    data: Optional[Path] = typer.Option(None, "--data", help="The training CSV (default: the one the card names)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Embedding cache file (.npz) of this network."),
    variant: str = typer.Option("fp32", "--variant", help="Score with fp32 or int8 (readouts are fitted on fp32)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the JSON report here."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    """Every readout option (objectives, calibrations, blends, TF-IDF stack): tune and test, paired vs the default."""
    _need_file(model / "model_card.json", "--model model_card.json")
    if data is not None:
        _need_file(data, "--data CSV")
    if variant not in ("fp32", "int8"):
        raise ConfigError(f"--variant must be fp32 or int8, got {variant!r}")
    _logging()
    from lola.export.study import format_study, run_study

    report = run_study(model, data, cache, variant)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    typer.echo(json.dumps(report, indent=2) if as_json else format_study(report))


@priors_app.command("score")
def score_cmd(
    model: Path = typer.Option(..., "--model", help="Exported model folder."),
    input_csv: Path = typer.Option(..., "--in", help="CSV with a `headline` column (and `lede`/`excerpt` if used)."),
    output_csv: Path = typer.Option(..., "--out", help="Output CSV: headline,prior_ctr, one row per input row."),
    variant: str = typer.Option("auto", "--variant", help="auto, fp32, int8 or fp16."),
    provider: str = typer.Option("auto", "--provider", help="auto, cpu or cuda."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Embedding cache file (.npz), e.g. the readout's "
                                                               "runs/emb.npz: cached headlines are not run again."),
) -> None:
    """Write a prior CTR for every row of a CSV."""
    _need_file(input_csv, "--in CSV")
    _logging()
    from lola.export.scoring import score_csv

    summary = score_csv(model, input_csv, output_csv, variant=variant, provider=provider, cache=cache)
    typer.echo(json.dumps(summary))


@priors_app.command("eval")
def eval_cmd(
    model: Path = typer.Option(..., "--model", help="Exported model folder."),
    data: Optional[Path] = typer.Option(None, "--data", help="Upworthy CSV (default: the shared dev CSV)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    split: str = typer.Option("test", "--split", help="Which split to evaluate on: test (default) or tune."),
    variant: str = typer.Option("fp32", "--variant"),
    embed_train_limit: int = typer.Option(3000, "--embed-train-limit",
                                          help="Training headlines embedded for the embedding baseline (CPU cost)."),
    skip_embedding: bool = typer.Option(False, "--skip-embedding-baseline"),
    baseline: Optional[Path] = typer.Option(None, "--baseline",
                                            help="Another exported model (today's default): report paired differences "
                                                 "in top-1, pairwise and within-test spread with bootstrap intervals."),
    baseline_variant: str = typer.Option("fp32", "--baseline-variant"),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Embedding cache (.npz) of --model's network."),
    baseline_cache: Optional[Path] = typer.Option(None, "--baseline-cache", help="Embedding cache of --baseline's."),
) -> None:
    """Fine-tuned model vs embedding ridge vs TF-IDF ridge vs constant prior, on a held-out split."""
    data = _default_data(data)
    _need_file(data, "--data CSV")
    if split not in ("test", "tune"):
        raise ConfigError(f"--split must be test or tune, got {split!r}")
    if baseline is not None:
        _need_file(baseline / "model_card.json", "--baseline model_card.json")
    if embed_train_limit < 10:
        raise ConfigError(f"--embed-train-limit must be >= 10, got {embed_train_limit}")
    _logging()
    from lola.export.evaluate import evaluate, format_table

    report = evaluate(model, data, split=split, variant=variant, embed_train_limit=embed_train_limit,
                      embedding_baseline=not skip_embedding, baseline=baseline, baseline_variant=baseline_variant,
                      cache=cache, baseline_cache=baseline_cache)
    typer.echo(json.dumps(report, indent=2) if as_json else format_table(report))


@priors_app.command("build-default")
def build_default_cmd(
    out: Path = typer.Option(Path("models/ctr-onnx"), "--out", help="Exported model folder."),
    data: Optional[Path] = typer.Option(None, "--data", help="Upworthy CSV (default: the shared dev CSV)."),
    base: Optional[str] = typer.Option(None, "--base"),
    full: bool = typer.Option(False, "--full", help="Use the full profile instead of --quick."),
    text_mode: Optional[TextModeOpt] = typer.Option(None, "--text-mode"),
    target: Optional[TargetOpt] = typer.Option(None, "--target", help=TARGET_HELP),
    loss: Optional[LossOpt] = typer.Option(None, "--loss", help=LOSS_HELP),
    loss_mix: Optional[float] = typer.Option(None, "--loss-mix", help="Weight of MSE mixed into a ranking loss."),
) -> None:
    """Quick-train on the train split, merge, export (fp32 + int8), validate, refit the readout, score tune into the card."""
    data = _default_data(data)
    _need_file(data, "--data CSV")
    config = _train_config(not full, text_mode=text_mode.value if text_mode else None,
                           target=target.value if target else None, loss=loss.value if loss else None,
                           loss_mix=loss_mix)
    _logging()
    from lola.export.pipeline import build_default

    card = build_default(data, out, config, base=base)
    typer.echo(json.dumps({"out": str(out), "training": card.training, "metrics": card.metrics}, indent=2))


def register(app: typer.Typer) -> None:
    """Add ``lola priors ...`` to the root ``lola`` app."""
    app.add_typer(priors_app, name="priors")
