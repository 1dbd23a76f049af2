"""Brief -> sampled, de-duplicated, checked, scored and ranked candidates (``lola variants generate``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lola.comply import Policy, check_text
from lola.generation.model import Generator
from lola.generation.score import creativity, rank, trade_off
from lola.generation.text import dedup_key


class PriorScorer:
    """Predicted CTR from the exported ONNX prior model (the worker's own serving path)."""

    def __init__(self, model_dir: str | Path) -> None:
        from lola.export.serve import OnnxPriorModel

        self.model_dir = str(model_dir)
        self.model = OnnxPriorModel(model_dir, provider="cpu")

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return np.clip(np.asarray(self.model.predict(list(texts)), dtype=float).reshape(-1), 0.0, 1.0)


def open_prior(model_dir: str | Path | None) -> tuple[PriorScorer | None, str]:
    """The prior scorer, or None and the reason (candidates are then ranked by creativity only)."""
    if model_dir is None:
        return None, "no prior model given (--model): ranked by creativity only, predicted_ctr is null"
    if not (Path(model_dir) / "model_card.json").is_file():
        return None, (f"no prior model at {model_dir} (build one: lola priors build-default): "
                      "ranked by creativity only, predicted_ctr is null")
    return PriorScorer(model_dir), f"prior model {model_dir}"


@dataclass
class Generation:
    candidates: list[dict[str, Any]]          # ranked compliant first (rank 1..), then the blocked ones
    sampled: int
    duplicates: int
    empty: int               # empty after clean-up, or cut off at the token limit
    blocked: int
    prior: str
    timings: dict[str, float] = field(default_factory=dict)
    new_tokens: int = 0

    def top(self, k: int) -> list[dict[str, Any]]:
        return [c for c in self.candidates if c["rank"] is not None][:k]

    def summary(self) -> dict[str, Any]:
        return {"sampled": self.sampled, "duplicates": self.duplicates, "empty": self.empty, "blocked": self.blocked,
                "ranked": sum(c["rank"] is not None for c in self.candidates), "prior": self.prior,
                "new_tokens": self.new_tokens, "seconds": self.timings}


def generate(generator: Generator, brief: str, existing: Sequence[str], policy: Policy, n: int = 16, seed: int = 0,
             lam: float = 0.3, prior: PriorScorer | None = None, prior_note: str = "",
             experiment_id: str | None = None, temperature: float = 0.9) -> Generation:
    """Sample ``n``, drop empty and duplicate candidates (and any equal to an existing variant),
    check each with the compliance policy, score the compliant ones and rank them by λ."""
    t0 = time.monotonic()
    sample = generator.sample(brief, existing, n=n, seed=seed, temperature=temperature)
    seen = {dedup_key(e) for e in existing}
    unique, duplicates, empty = [], 0, 0
    for text, complete in zip(sample.texts, sample.complete):
        key = dedup_key(text)
        if not key or not complete:  # empty, or cut off at max_new_tokens
            empty += 1
        elif key in seen:
            duplicates += 1
        else:
            seen.add(key)
            unique.append(text)
    verdicts = [check_text(policy, text, experiment_id) for text in unique]
    ok = [t for t, v in zip(unique, verdicts) if v.ok]
    t1 = time.monotonic()
    emb = generator.embed([*ok, *existing])
    creative, emb_nov, dist_nov = creativity(ok, emb[:len(ok)], list(existing), emb[len(ok):])
    t2 = time.monotonic()
    ctr = prior(ok) if (prior is not None and ok) else np.full(len(ok), np.nan)
    t3 = time.monotonic()
    order = rank(ctr, creative, lam) if ok else np.zeros(0, dtype=int)
    score = trade_off(ctr, creative, lam) if ok else np.zeros(0)
    ranked = []
    for r, i in enumerate(order, start=1):
        ranked.append({"rank": r, "text": ok[i], "predicted_ctr": None if np.isnan(ctr[i]) else round(float(ctr[i]), 6),
                       "creativity": round(float(creative[i]), 4), "embedding_novelty": round(float(emb_nov[i]), 4),
                       "distinct_novelty": round(float(dist_nov[i]), 4), "score": round(float(score[i]), 4),
                       "compliant": True, "violations": []})
    blocked = [{"rank": None, "text": t, "predicted_ctr": None, "creativity": None, "embedding_novelty": None,
                "distinct_novelty": None, "score": None, **v.to_dict()} for t, v in zip(unique, verdicts) if not v.ok]
    timings = {"sample": round(sample.seconds, 2), "check_and_dedup": round(t1 - t0 - sample.seconds, 3),
               "creativity": round(t2 - t1, 2), "prior": round(t3 - t2, 2)}
    return Generation(ranked + blocked, len(sample.texts), duplicates, empty, len(blocked),
                      prior_note or ("prior model" if prior else "no prior model"), timings, sample.new_tokens)
