"""``lola variants tune``: LoRA DPO of the generator on what won (train-split preference pairs).

A preference pair is two headlines of the same train-split test whose CTRs differ
significantly (:func:`lola.export.metrics.significant_pairs`, two-proportion test): the
winner is *chosen*, the loser *rejected*, the prompt is the story's lede in the same
chat prompt the generator samples from. DPO (Rafailov et al. 2023) rather than RELATE-style
RL: the archive already holds the outcome of each comparison, so no reward model (and no
sampling inside the training loop, which a 2-core CPU cannot afford) is needed; the
compliance checker filters the pairs instead (a non-compliant winner is never a target).

The loss is written here (a few lines) instead of using ``trl``: trl is not a dependency,
pulls ``datasets`` and friends, and its trainer adds nothing on this scale; the reference
model is the same network with the LoRA adapter disabled (peft), so no second copy is
held in memory.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from lola.comply import Policy, check_text
from lola.data.upworthy import headline_tests
from lola.errors import ConfigError
from lola.export.metrics import significant_pairs
from lola.export.text import clean_text


#: Training prompts carry the first 300 characters of the lede (shorter sequences, same prompt shape).
TRAIN_BRIEF_CHARS = 300


@dataclass(frozen=True)
class Pair:
    brief: str
    chosen: str
    rejected: str


def preference_pairs(packages, policy: Policy, alpha: float = 0.05, per_test: int = 3) -> list[Pair]:
    """Winner/loser headline pairs of the same test with significantly different CTRs (at most
    ``per_test`` per test, largest CTR gap first); only pairs whose winner is compliant."""
    out = []
    for test in sorted(headline_tests(packages), key=lambda t: (t.test_id, t.eyecatcher_id)):
        brief = next((clean_text(p.lede) for p in test.packages if clean_text(p.lede)), "")
        if len(brief) < 40:
            continue
        found = []
        for i, j in significant_pairs(test, alpha):
            w, l = (i, j) if test.ctrs[i] > test.ctrs[j] else (j, i)
            found.append((test.ctrs[w] - test.ctrs[l], w, l))
        for _, w, l in sorted(found, reverse=True)[:per_test]:
            chosen, rejected = clean_text(test.headlines[w]), clean_text(test.headlines[l])
            if check_text(policy, chosen).ok:
                out.append(Pair(brief, chosen, rejected))
    return out


def dpo_loss(pol_c, pol_r, ref_c, ref_r, beta: float):
    """DPO: ``-log σ(β[(log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r))])``, and the implicit reward margin."""
    import torch.nn.functional as F

    margin = beta * ((pol_c - ref_c) - (pol_r - ref_r))
    return -F.logsigmoid(margin).mean(), margin


def sequence_logprobs(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], with_counts: bool = False):
    """Sum of the response tokens' log-probabilities given the prompt (prompt tokens masked);
    with ``with_counts`` also the number of response tokens of each sequence.

    The vocabulary projection runs only at the response positions: over a ~49k-token
    vocabulary the full logits of every prompt token would be most of the step's time.
    """
    import torch

    ids, masks = [], []
    for p, r in zip(prompts, responses):
        p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        r_ids = tokenizer(r + "<|im_end|>", add_special_tokens=False)["input_ids"]
        ids.append(p_ids + r_ids)
        masks.append([0] * len(p_ids) + [1] * len(r_ids))
    width = max(map(len, ids))
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
    attention = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    target = torch.tensor([m + [0] * (width - len(m)) for m in masks], dtype=torch.bool)[:, 1:]
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # LoRA layers stay in it
    hidden = causal_lm.model(input_ids=input_ids, attention_mask=attention).last_hidden_state[:, :-1]
    rows, cols = target.nonzero(as_tuple=True)
    logits = causal_lm.lm_head(hidden[rows, cols]).float()
    token_logp = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:][rows, cols].unsqueeze(-1)).squeeze(-1)
    sums = torch.zeros(len(ids), dtype=token_logp.dtype).index_add(0, rows, token_logp)
    if with_counts:
        return sums, torch.bincount(rows, minlength=len(ids)).to(token_logp.dtype)
    return sums


def train_steps(model, opt, loss_of_step, max_steps: int, minutes: float, log, label: str) -> tuple[list, int, float, float]:
    """The budgeted optimiser loop both tuning stages share: ``loss_of_step(step)`` builds the
    step's batch and loss; stops at ``max_steps`` or ``minutes`` of wall time. Returns the losses,
    the steps taken, and the wall and CPU seconds (this process) of training."""
    t0, cpu0 = time.monotonic(), time.process_time()
    losses: list[float] = []
    steps = 0
    model.train()
    while steps < max_steps and time.monotonic() - t0 < 60 * minutes:
        loss = loss_of_step(steps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        steps += 1
        if steps % 20 == 0:
            log(f"{label} {steps}: loss {np.mean(losses[-20:]):.4f} ({time.monotonic() - t0:.0f}s)")
    return losses, steps, time.monotonic() - t0, time.process_time() - cpu0


def train_dpo(pairs: Sequence[Pair], out: Path, minutes: float, max_steps: int, batch_size: int = 4,
              lr: float = 5e-4, beta: float = 0.1, rank: int = 8, seed: int = 0, held_out: Sequence[Pair] = (),
              reference: Optional[Path] = None, base: Optional[str] = None, log=print) -> dict:
    """LoRA DPO within a wall-clock budget; writes the adapter and ``tune_card.json`` to ``out``.

    ``reference``: an SFT adapter folder, merged into the base first; the DPO adapter is
    trained on top of it and the reference model (adapter disabled) is then the SFT model."""
    import torch
    from peft import LoraConfig, get_peft_model

    from lola.generation.model import Generator

    if not pairs:
        raise ConfigError("no preference pairs to train on")
    torch.manual_seed(seed)
    gen = Generator(base=base, adapter=reference)
    tok = gen.tokenizer
    model = get_peft_model(gen.model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    rng = np.random.default_rng(seed)

    def batch_logps(batch: Sequence[Pair]):
        prompts = [gen.prompt(p.brief[:TRAIN_BRIEF_CHARS]) for p in batch]
        both_p = prompts + prompts
        both_r = [p.chosen for p in batch] + [p.rejected for p in batch]
        with torch.no_grad(), model.disable_adapter():
            ref = sequence_logprobs(model, tok, both_p, both_r)
        pol = sequence_logprobs(model, tok, both_p, both_r)
        k = len(batch)
        return pol[:k], pol[k:], ref[:k], ref[k:]

    def preference_accuracy(items: Sequence[Pair]) -> Optional[float]:
        if not items:
            return None
        model.eval()
        wins = []
        with torch.no_grad():
            for s in range(0, len(items), 8):
                pc, pr, rc, rr = batch_logps(items[s:s + 8])
                wins += ((pc - rc) - (pr - rr) > 0).tolist()
        model.train()
        return float(np.mean(wins))

    order = rng.permutation(len(pairs))

    def dpo_step(step: int):
        nonlocal order
        idx = order[(step * batch_size) % len(pairs):][:batch_size]
        if len(idx) < batch_size:
            order = rng.permutation(len(pairs))
            idx = order[:batch_size]
        return dpo_loss(*batch_logps([pairs[i] for i in idx]), beta)[0]

    losses, steps, train_seconds, cpu_seconds = train_steps(model, opt, dpo_step, max_steps, minutes, log, "step")
    held = preference_accuracy(held_out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    card = {"stage": "dpo", "method": "LoRA DPO (hand-written loss, reference = adapter disabled)",
            "base": gen.ref.describe(), "reference": str(reference) if reference else "base model",
            "pairs": len(pairs), "steps": steps, "batch_size": batch_size, "lr": lr, "beta": beta, "lora_rank": rank,
            "seed": seed, "budget_minutes": minutes, "train_seconds": round(train_seconds, 1),
            "train_cpu_seconds": round(cpu_seconds, 1),
            "pairs_seen": steps * batch_size, "loss_first_20": float(np.mean(losses[:20])),
            "loss_last_20": float(np.mean(losses[-20:])), "held_out_pairs": len(held_out),
            "held_out_preference_accuracy": held}
    (out / "tune_card.json").write_text(json.dumps(card, indent=1))
    return card
