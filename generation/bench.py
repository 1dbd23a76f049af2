"""``lola bench generate``: candidates/s and tokens/s of the generator, torch eager and ONNX Runtime.

The ONNX model is optimum-onnx's decoder export (with KV cache) of the merged
generator (base, or base + ``--adapter`` merged), written once to ``--onnx-dir`` and
reused; both runtimes sample the same prompt with the same settings. Wall-clock
figures on a shared machine: the JSON names the machine's CPU count and load.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

import typer

from lola.errors import ConfigError

BRIEF = ("In a debate about creationism, one guy got pretty upset by those who advocate for it. "
         "And by one guy, I mean a priest.")


def _rate(runs: list[tuple[int, int, float]]) -> dict:
    cands = sum(r[0] for r in runs)
    tokens = sum(r[1] for r in runs)
    secs = sum(r[2] for r in runs)
    return {"candidates_per_s": round(cands / secs, 3), "tokens_per_s": round(tokens / secs, 1),
            "seconds": round(secs, 2), "rounds": len(runs), "candidates": cands, "new_tokens": tokens}


def export_onnx(generator, onnx_dir: Path) -> float:
    """optimum-onnx decoder export of the (merged) generator; seconds taken (0 when cached)."""
    if (onnx_dir / "model.onnx").is_file():
        return 0.0
    import tempfile

    from optimum.onnxruntime import ORTModelForCausalLM

    t = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        generator.model.save_pretrained(tmp)
        generator.tokenizer.save_pretrained(tmp)
        ORTModelForCausalLM.from_pretrained(tmp, export=True).save_pretrained(str(onnx_dir))
        generator.tokenizer.save_pretrained(str(onnx_dir))
    return time.monotonic() - t


def run_bench(n: int, rounds: int, adapter: Optional[Path], onnx_dir: Path, onnx: bool) -> dict:
    import torch

    from lola.generation.model import Generator

    gen = Generator(adapter=adapter)
    out = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                       "load_average_1m": round(os.getloadavg()[0], 2)},
           "n": n, "rounds": rounds, "load_seconds": round(gen.load_seconds, 1)}
    runs = []
    for r in range(rounds):
        s = gen.sample(BRIEF, n=n, seed=r)
        runs.append((n, s.new_tokens, s.seconds))
    out["torch_eager"] = _rate(runs)
    if not onnx:
        return out
    try:
        export_seconds = export_onnx(gen, onnx_dir)
        from optimum.onnxruntime import ORTModelForCausalLM

        ort_model = ORTModelForCausalLM.from_pretrained(str(onnx_dir), provider="CPUExecutionProvider")
    except Exception as exc:  # an export failure is a benchmark result, reported rather than raised
        out["onnxruntime"] = {"blocked": f"{type(exc).__name__}: {str(exc)[:300]}"}
        return out
    enc = gen.tokenizer([gen.prompt(BRIEF)], return_tensors="pt")
    runs = []
    for r in range(rounds):
        torch.manual_seed(r)
        t = time.monotonic()
        seq = ort_model.generate(**enc, do_sample=True, temperature=0.9, top_p=0.95, max_new_tokens=32,
                                 num_return_sequences=n, eos_token_id=gen.stop_ids,
                                 pad_token_id=gen.tokenizer.pad_token_id)
        secs = time.monotonic() - t
        new = seq[:, enc["input_ids"].shape[1]:]
        stops = set(gen.stop_ids) | {gen.tokenizer.pad_token_id}
        tokens = 0
        for row in new.tolist():
            tokens += next((i + 1 for i, tok in enumerate(row) if tok in stops), len(row))
        runs.append((n, tokens, secs))
    out["onnxruntime"] = {**_rate(runs), "export_seconds": round(export_seconds, 1), "onnx_dir": str(onnx_dir)}
    out["onnx_over_eager_tokens_per_s"] = round(out["onnxruntime"]["tokens_per_s"] / out["torch_eager"]["tokens_per_s"], 2)
    return out


def register(bench_app: typer.Typer) -> None:
    @bench_app.command("generate")
    def generate_bench(
        n: int = typer.Option(16, "--n", help="Candidates per round."),
        rounds: int = typer.Option(2, "--rounds"),
        adapter: Optional[Path] = typer.Option(None, "--adapter", help="LoRA adapter (merged before timing)."),
        onnx_dir: Path = typer.Option(Path("models/generator-onnx"), "--onnx-dir",
                                      help="Where the ONNX export is written once and reused."),
        onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Also time ONNX Runtime."),
        as_json: bool = typer.Option(True, "--json", help="Print JSON (always JSON; kept for symmetry)."),
    ) -> None:
        """Generator throughput: candidates/s and tokens/s, torch eager and ONNX Runtime (CPU)."""
        if n < 1 or rounds < 1:
            raise ConfigError("--n and --rounds must be >= 1")
        typer.echo(json.dumps(run_bench(n, rounds, adapter, onnx_dir, onnx), indent=1))
