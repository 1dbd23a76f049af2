"""The SFT stage of ``lola variants tune``: LoRA supervised fine-tuning on what won.

The DPO paper (Rafailov et al. 2023, section 4) starts from an SFT model; where none
exists it first fine-tunes on the *preferred* completions (maximum likelihood of the
chosen responses), then runs DPO with that SFT model as the reference, so that the
reference is close to the distribution the preference data came from. Here the
preferred completions are the winners of the train-split preference pairs
(:func:`lola.generation.tune.preference_pairs`), one example per distinct (story,
winning headline), in the same chat prompt the generator samples from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from lola.errors import ConfigError
from lola.generation.model import Generator
from lola.generation.tune import TRAIN_BRIEF_CHARS, Pair, sequence_logprobs, train_steps

#: LoRA targets of the SFT stage (all attention projections: the stage that moves the style).
SFT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class Example:
    brief: str
    target: str


def sft_examples(pairs: Sequence[Pair]) -> list[Example]:
    """One example per distinct (brief, winning headline) of the pairs, in the pairs' order.

    Built only from the pairs it is given: pass the *train* split's pairs, and no other
    split's story or headline can reach the SFT data."""
    seen, out = set(), []
    for p in pairs:
        key = (p.brief, p.chosen)
        if key not in seen:
            seen.add(key)
            out.append(Example(p.brief, p.chosen))
    return out


def mean_token_nll(model, tokenizer, gen: Generator, items: Sequence[Example]):
    """Mean negative log-likelihood per response token of the targets given their prompts (the SFT loss)."""
    prompts = [gen.prompt(e.brief[:TRAIN_BRIEF_CHARS]) for e in items]
    sums, counts = sequence_logprobs(model, tokenizer, prompts, [e.target for e in items], with_counts=True)
    return -sums.sum() / counts.sum()


def train_sft(examples: Sequence[Example], out: Path, minutes: float, max_steps: int, batch_size: int = 8,
              lr: float = 5e-4, rank: int = 8, seed: int = 0, held_out: Sequence[Example] = (),
              base: Optional[str] = None, log=print) -> dict:
    """LoRA SFT within a wall-clock budget; writes the adapter and ``tune_card.json`` to ``out``."""
    import torch
    from peft import LoraConfig, get_peft_model

    if not examples:
        raise ConfigError("no SFT examples to train on")
    torch.manual_seed(seed)
    gen = Generator(base=base)
    tok = gen.tokenizer
    model = get_peft_model(gen.model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                                 target_modules=list(SFT_TARGETS), task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    rng = np.random.default_rng(seed)

    def held_nll() -> Optional[float]:
        if not held_out:
            return None
        model.eval()
        with torch.no_grad():
            vals = [float(mean_token_nll(model, tok, gen, held_out[s:s + 16])) for s in range(0, len(held_out), 16)]
        model.train()
        return float(np.mean(vals))

    before = held_nll()
    order, at = rng.permutation(len(examples)), 0

    def sft_step(_step: int):
        nonlocal order, at
        if at + batch_size > len(order):
            order, at = rng.permutation(len(examples)), 0
        batch = [examples[i] for i in order[at:at + batch_size]]
        at += batch_size
        return mean_token_nll(model, tok, gen, batch)

    losses, steps, train_seconds, cpu_seconds = train_steps(model, opt, sft_step, max_steps, minutes, log, "sft step")
    after = held_nll()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    card = {"stage": "sft", "method": "LoRA SFT on the train-split winners (mean token NLL)",
            "base": gen.ref.describe(), "examples": len(examples), "steps": steps, "batch_size": batch_size,
            "lr": lr, "lora_rank": rank, "lora_targets": list(SFT_TARGETS), "seed": seed, "budget_minutes": minutes,
            "train_seconds": round(train_seconds, 1),
            "train_cpu_seconds": round(cpu_seconds, 1), "examples_seen": steps * batch_size,
            "epochs": round(steps * batch_size / len(examples), 3),
            "loss_first_20": float(np.mean(losses[:20])), "loss_last_20": float(np.mean(losses[-20:])),
            "held_out_examples": len(held_out), "held_out_nll_before": before, "held_out_nll_after": after}
    (out / "tune_card.json").write_text(json.dumps(card, indent=1))
    return card
