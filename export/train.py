"""LoRA fine-tuning of a Llama CTR regressor (LOLA section 3.3 and appendix F).

``LlamaForSequenceClassification`` with ``num_labels=1`` reads the hidden state
of the last non-pad token (right padding) and maps it linearly to one number,
trained by (impression-weighted) MSE against the standardised CTR (see
:mod:`lola.export.data`). LoRA adapters sit on ``q_proj`` and ``v_proj``; the
new ``score`` head is trained in full (peft ``modules_to_save``).

The run is seeded, shows a progress bar, writes a checkpoint every
``checkpoint_every`` steps and resumes from the newest one whose settings match.
The batch order is a pure function of (seed, epoch), so a resumed run sees the
same batches as an uninterrupted one. Everything that can be wrong with the
inputs is checked before the first step.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lola.data.upworthy import headline_tests, load_packages, split_packages
from lola.errors import ConfigError, DataError
from lola.export.base import BaseRef, load_classifier, load_tokenizer, resolve_base
from lola.export.config import TrainConfig
from lola.export.data import HeadlineExamples, TargetScaling, build_examples
from lola.export.digest import file_sha256
from lola.export.level import fit_package_level
from lola.export.ranking import TestGroups, build_groups

log = logging.getLogger("lola.export.train")

STATE_FILE = "train_state.json"
ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"
KEEP_CHECKPOINTS = 2


@dataclass(frozen=True)
class PreparedData:
    train: HeadlineExamples
    tune: HeadlineExamples
    scaling: TargetScaling
    data_path: str
    data_sha256: str
    load_summary: str
    level_report: dict | None = None
    #: the training tests over ``train``'s rows (ranking losses only)
    groups: TestGroups | None = None


def prepare_data(data_csv: str | Path, config: TrainConfig) -> PreparedData:
    """Read the CSV, split by test (train/tune/test), build per-headline targets, fit the scaling."""
    packages, report = load_packages(data_csv)
    splits = split_packages(packages)
    kwargs = dict(text_mode=config.text_mode, min_impressions=config.min_impressions,
                  weight_by_impressions=config.weight_by_impressions)
    try:
        train = build_examples(splits["train"], **kwargs)
        tune = build_examples(splits["tune"], **kwargs)
    except DataError as exc:
        raise DataError(f"{data_csv}: {exc}") from None
    level = level_report = None
    if config.target == "level_deviation":
        # Alone in its test, a headline's deviation is 0 by construction: nothing to learn.
        train = train.subset(np.flatnonzero(train.test_sizes >= 2))
        level, level_report = fit_package_level(splits["train"], splits["tune"])
    groups = None
    if config.loss != "mse":
        # A ranking loss needs whole tests: the subset limit keeps tests, not loose headlines.
        tests = headline_tests(splits["train"])
        groups = build_groups(tests, {h: i for i, h in enumerate(train.headlines)})
        if config.train_limit is not None and config.train_limit < len(train):
            order = np.random.default_rng(config.seed).permutation(len(groups))
            sizes = groups.mask.sum(axis=1)[order]
            keep = order[: int(np.searchsorted(np.cumsum(sizes), config.train_limit, side="right")) or 1]
            rows = np.unique(groups.index[keep][groups.mask[keep]])
            train = train.subset(rows)
            groups = build_groups(tests, {h: i for i, h in enumerate(train.headlines)})
    elif config.train_limit is not None and config.train_limit < len(train):
        rng = np.random.default_rng(config.seed)
        train = train.subset(np.sort(rng.choice(len(train), size=config.train_limit, replace=False)))
    if len(train) < 2:
        raise DataError(f"{data_csv}: only {len(train)} training headline(s) after filtering; need at least 2")
    scaling = TargetScaling.fit_examples(train, config.target, level)
    return PreparedData(train, tune, scaling, str(Path(data_csv).resolve()), file_sha256(data_csv), report.summary(),
                        level_report, groups)


def total_steps(n_examples: int, config: TrainConfig) -> int:
    if config.max_steps is not None:
        return config.max_steps
    return max(1, math.ceil(config.epochs * n_examples / config.batch_size))


def batch_indices(step: int, n_examples: int, config: TrainConfig) -> np.ndarray:
    """Indices of the examples in batch ``step`` (0-based): a seeded permutation per epoch."""
    per_epoch = max(1, n_examples // config.batch_size)  # drop the ragged tail of each epoch
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([config.seed, epoch]).permutation(n_examples)
    return order[position * config.batch_size : (position + 1) * config.batch_size]


def tests_per_batch(groups: TestGroups, config: TrainConfig) -> int:
    """Whole tests per batch for a ranking loss: about ``batch_size`` headlines."""
    return max(1, round(config.batch_size / float(groups.mask.sum(axis=1).mean())))


def group_batch(step: int, groups: TestGroups, config: TrainConfig) -> np.ndarray:
    """Test (group) indices in batch ``step``: a seeded permutation of the tests per epoch."""
    per_batch = tests_per_batch(groups, config)
    per_epoch = max(1, len(groups) // per_batch)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([config.seed, epoch]).permutation(len(groups))
    return order[position * per_batch : (position + 1) * per_batch]


def ranking_batch_loss(pred, rows: np.ndarray, groups: TestGroups, picked: np.ndarray, config: TrainConfig,
                       target_std: float):
    """The listnet or ranknet loss (torch) of scores ``pred`` for ``rows``, over the tests ``picked``."""
    import torch

    local = {int(r): k for k, r in enumerate(rows)}
    mask = torch.as_tensor(groups.mask[picked])
    index = torch.as_tensor(np.vectorize(lambda r: local.get(int(r), 0))(groups.index[picked]))
    if config.loss == "listnet":
        target = torch.as_tensor(groups.ctr[picked] / target_std, dtype=torch.float32).masked_fill(~mask, -torch.inf)
        p = torch.softmax(target, dim=1)
        log_q = torch.log_softmax(pred[index].masked_fill(~mask, -torch.inf), dim=1).masked_fill(~mask, 0.0)
        w = torch.as_tensor(groups.weight[picked], dtype=torch.float32)
        return -(w * (p * log_q).sum(dim=1)).sum() / w.sum()
    in_batch = np.isin(groups.pairs, rows).all(axis=1)
    pairs = groups.pairs[in_batch]
    if len(pairs) == 0:
        return pred.sum() * 0.0  # no significant pair among these tests: no ranking signal this step
    win = torch.as_tensor([local[int(r)] for r in pairs[:, 0]])
    lose = torch.as_tensor([local[int(r)] for r in pairs[:, 1]])
    return torch.nn.functional.softplus(-(pred[win] - pred[lose])).mean()


def pick_device_and_precision(config: TrainConfig):
    """CUDA with bf16 (or fp16) when a GPU is present, else CPU fp32."""
    import torch

    if torch.cuda.is_available():
        device = torch.device("cuda")
        if config.precision == "auto":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[config.precision]
        return device, dtype
    if config.precision in ("bf16", "fp16"):
        raise ConfigError(f"precision={config.precision} needs a CUDA GPU; none is usable here")
    return torch.device("cpu"), torch.float32


#: TrainConfig fields newer than the first checkpoint format (see _config_fingerprint).
ADDED_SINCE_FIRST_CHECKPOINTS = ("loss", "loss_mix")


def _config_fingerprint(config: TrainConfig, data_sha256: str, base: BaseRef) -> str:
    import hashlib

    # Run-control settings (how often to checkpoint, the time budget) may change on resume.
    settings = config.model_dump(mode="json", exclude={"checkpoint_every", "max_train_seconds", "eval_batch_size"})
    # Settings added after checkpoints were written leave the fingerprint out while they are at
    # their defaults, so resuming an older run still finds its checkpoints.
    if all(settings[name] == TrainConfig.model_fields[name].default for name in ADDED_SINCE_FIRST_CHECKPOINTS):
        for name in ADDED_SINCE_FIRST_CHECKPOINTS:
            del settings[name]
    payload = json.dumps([settings, data_sha256, base.to_dict()], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _latest_checkpoint(out_dir: Path, fingerprint: str) -> Path | None:
    root = out_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return None
    candidates = []
    for path in root.glob("step-*"):
        meta = path / "meta.json"
        if not meta.is_file():
            continue  # an interrupted write: ignore it
        info = json.loads(meta.read_text())
        if info.get("fingerprint") == fingerprint:
            candidates.append((info["step"], path))
        else:
            log.warning("ignoring checkpoint %s: written with other settings", path)
    return max(candidates)[1] if candidates else None


def _save_checkpoint(out_dir: Path, step: int, fingerprint: str, model, optimizer, scheduler, losses, elapsed) -> None:
    import torch

    root = out_dir / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    trainable = {k: v.detach().cpu() for k, v in model.named_parameters() if v.requires_grad}
    torch.save(trainable, tmp / "trainable.pt")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state()}, tmp / "optim.pt")
    (tmp / "meta.json").write_text(json.dumps({"step": step, "fingerprint": fingerprint, "losses": losses,
                                               "elapsed_s": elapsed}))
    final = root / f"step-{step:06d}"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(root.glob("step-*"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[int, list, float]:
    import torch

    trainable = torch.load(path / "trainable.pt", map_location="cpu")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in trainable.items():
            params[name].copy_(value)
    state = torch.load(path / "optim.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    meta = json.loads((path / "meta.json").read_text())
    return meta["step"], meta["losses"], meta.get("elapsed_s", 0.0)


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    return tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)["input_ids"]


def collate(token_ids: Sequence[Sequence[int]], pad_id: int):
    """Right-pad a batch to its longest row."""
    import torch

    width = max(len(t) for t in token_ids)
    ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for i, row in enumerate(token_ids):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def train(
    data_csv: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    base: str | None = None,
    resume: bool = True,
    progress: bool = True,
) -> dict:
    """Fine-tune, write ``adapter/`` and ``train_state.json`` into ``out_dir``; return the state."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a folder")
    ref = resolve_base(base)
    data = prepare_data(data_csv, config)  # every data problem surfaces here, before the model loads
    out_dir.mkdir(parents=True, exist_ok=True)

    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    device, dtype = pick_device_and_precision(config)
    log.info("training on %s (%s) from %s", device, str(dtype).removeprefix("torch."), ref.describe())

    tokenizer = load_tokenizer(ref)
    model = load_classifier(ref, tokenizer.pad_token_id)
    # A zero head starts every prediction at the training mean (loss 1 on standardised
    # targets) instead of at a random offset; LoRA's B matrices start at zero the same way.
    with torch.no_grad():
        model.score.weight.zero_()
    n_layers = int(model.config.num_hidden_layers)
    if config.lora_last_layers is not None and config.lora_last_layers > n_layers:
        raise ConfigError(f"lora_last_layers={config.lora_last_layers} but the base has {n_layers} layers")
    layers = (list(range(n_layers - config.lora_last_layers, n_layers))
              if config.lora_last_layers is not None else None)
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        layers_to_transform=layers,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
    )
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise ConfigError(f"LoRA target modules {config.lora_target_modules} do not fit this base: {exc}") from None
    model.to(device)

    token_ids = tokenize(tokenizer, data.train.texts, config.max_length)
    targets = torch.tensor(data.scaling.target(data.train), dtype=torch.float32)
    weights = torch.tensor(data.train.weights, dtype=torch.float32)
    steps = total_steps(len(data.train), config)
    if data.groups is not None and config.max_steps is None:
        steps = max(1, math.ceil(config.epochs * len(data.groups) / tests_per_batch(data.groups, config)))

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, config.warmup_steps, steps)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

    fingerprint = _config_fingerprint(config, data.data_sha256, ref)
    start_step, losses, elapsed_before = 0, [], 0.0
    checkpoint = _latest_checkpoint(out_dir, fingerprint) if resume else None
    if checkpoint is not None:
        start_step, losses, elapsed_before = _load_checkpoint(checkpoint, model, optimizer, scheduler)
        log.info("resumed from %s (step %d of %d)", checkpoint, start_step, steps)

    model.train()
    started = time.monotonic()
    stopped_early = False
    bar = tqdm(total=steps, initial=start_step, desc="lora", unit="step", disable=not progress, dynamic_ncols=True)
    step = start_step
    while step < steps:
        if data.groups is None:
            index = batch_indices(step, len(data.train), config)
        else:
            picked = group_batch(step, data.groups, config)
            index = np.unique(data.groups.index[picked][data.groups.mask[picked]])
        ids, mask = collate([token_ids[i] for i in index], tokenizer.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        y, w = targets[index].to(device), weights[index].to(device)
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32):
            pred = model(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
        loss = (w * (pred.float() - y) ** 2).sum() / w.sum()
        if data.groups is not None:
            rank = ranking_batch_loss(pred.float().cpu(), index, data.groups, picked, config, data.scaling.std)
            loss = config.loss_mix * loss + (1.0 - config.loss_mix) * rank.to(loss.device)
        if not torch.isfinite(loss):
            raise DataError(f"training loss became {loss.item()} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        step += 1
        losses.append(round(float(loss.item()), 6))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        elapsed = elapsed_before + time.monotonic() - started
        if step % config.checkpoint_every == 0 or step == steps:
            _save_checkpoint(out_dir, step, fingerprint, model, optimizer, scheduler, losses, elapsed)
        if config.max_train_seconds is not None and elapsed > config.max_train_seconds and step < steps:
            log.warning("time budget of %.0f s spent after %d of %d steps; stopping early (learning rate not "
                        "fully decayed)", config.max_train_seconds, step, steps)
            _save_checkpoint(out_dir, step, fingerprint, model, optimizer, scheduler, losses, elapsed)
            stopped_early = True
            break
    bar.close()
    elapsed = elapsed_before + time.monotonic() - started

    model.save_pretrained(out_dir / ADAPTER_DIR)
    tokenizer.save_pretrained(out_dir / ADAPTER_DIR)
    state = {
        "base": ref.to_dict(),
        "base_description": ref.describe(),
        "config": config.model_dump(mode="json"),
        "target_scaling": data.scaling.to_dict(),
        "week_level_fit": data.level_report,
        "data": {"path": data.data_path, "sha256": data.data_sha256, "load": data.load_summary,
                 "split": "by-component 60/20/20 (lola.data.upworthy.split_packages)",
                 "train_headlines": len(data.train), "tune_headlines": len(data.tune)},
        "steps_done": step,
        "steps_planned": steps,
        "stopped_early": stopped_early,
        "train_seconds": round(elapsed, 1),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "final_loss_mean_last_20": float(np.mean(losses[-20:])) if losses else None,
        "pad_token_id": tokenizer.pad_token_id,
    }
    (out_dir / STATE_FILE).write_text(json.dumps(state, indent=2))
    return state


def read_state(model_dir: str | Path) -> dict:
    path = Path(model_dir) / STATE_FILE
    if not path.is_file():
        raise DataError(f"{model_dir} is not a training output folder (no {STATE_FILE}); run `lola priors train` first")
    return json.loads(path.read_text())


def load_merged(model_dir: str | Path):
    """Load base + adapter from a training folder and ``merge_and_unload`` (fp32, CPU)."""
    from peft import PeftModel

    state = read_state(model_dir)
    ref = BaseRef(**state["base"])
    tokenizer = load_tokenizer(ref)
    model = load_classifier(ref, tokenizer.pad_token_id)
    model = PeftModel.from_pretrained(model, str(Path(model_dir) / ADAPTER_DIR))
    merged = model.merge_and_unload()
    merged.eval()
    return merged, tokenizer, state
