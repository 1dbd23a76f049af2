"""``lola bench priors``: headlines/s of the CTR prior model, torch eager vs ONNX Runtime fp32 vs int8.

All engines score the same headlines (distinct headlines of the dev CSV's test
split), in the same batches, in the same process. Rounds are interleaved
(torch, fp32, int8, torch, ...) and the median round per engine is reported, so a
load spike from other processes hits every engine alike. Each engine's time
includes tokenisation. CUDA is measured only when a CUDA device is really usable;
otherwise it is reported as not measured.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import typer

from lola.export.card import head_ctr

TARGETS = {"ort_fp32_vs_torch_eager": 2.0, "ort_int8_vs_torch_eager": 3.0, "cuda_headlines_per_s": 20000.0}


def _headlines(data: Path, n: int) -> list[str]:
    from lola.data.upworthy import load_packages, split_packages

    packages, _ = load_packages(data)
    test = sorted({p.headline.strip() for p in split_packages(packages)["test"]})
    if len(test) < n:
        test = (test * (n // max(1, len(test)) + 1))[:n]
    return test[:n]


def _torch_predictor(train_dir: Path, batch_size: int, readout: tuple | None = None) -> Callable[[list[str]], "object"]:
    """torch eager doing what the served model does: the network, then its head or the refitted readout."""
    import numpy as np
    import torch

    from lola.export.onnx_export import with_embedding
    from lola.export.train import load_merged

    model, tokenizer, state = load_merged(train_dir)
    wrapper = with_embedding(model)  # logits and the masked-mean embedding, like the ONNX graph
    max_length = state["config"]["max_length"]
    scaling = state["target_scaling"]
    mean, std = scaling["mean"], scaling["std"]
    level = 0.0
    if scaling.get("week_level"):  # level_deviation model: the serving path adds the latest week level
        from lola.export.level import WeekLevel

        level = WeekLevel.from_dict(scaling["week_level"]).latest

    def predict(texts: list[str]):
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                enc = tokenizer(texts[start : start + batch_size], padding=True, truncation=True,
                                max_length=max_length, return_tensors="pt")
                result = wrapper(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
                if readout is None:
                    out.append(head_ctr(mean, std, result.logits[:, 0].numpy().astype(np.float64)))
                else:
                    out.append(result.embedding.numpy().astype(np.float64) @ readout[0] + readout[1])
        return np.clip(level + np.concatenate(out), 0.0, 1.0)

    return predict


def run_bench(model_dir: Path, train_dir: Optional[Path], data: Path, n: int, batch_size: int, rounds: int) -> dict:
    import numpy as np

    from lola.errors import ConfigError
    from lola.export.serve import OnnxPriorModel, cuda_usable

    texts = _headlines(data, n)
    engines: dict[str, Callable] = {}
    card_train_dir = None
    fp32 = OnnxPriorModel(model_dir, provider="cpu", variant="fp32", batch_size=batch_size)
    card_train_dir = fp32.card.source_training_dir
    train_dir = train_dir or (Path(card_train_dir) if card_train_dir else None)
    if train_dir is None or not (train_dir / "train_state.json").is_file():
        raise ConfigError(f"torch eager needs the training folder; pass --train-dir (card says {card_train_dir})")
    readout = (fp32.readout_weights, fp32.readout_bias) if fp32.readout_weights is not None else None
    engines["torch_eager"] = _torch_predictor(train_dir, batch_size, readout)
    engines["ort_fp32"] = fp32.predict
    if "int8" in fp32.card.variants:
        engines["ort_int8"] = OnnxPriorModel(model_dir, provider="cpu", variant="int8", batch_size=batch_size).predict
    cuda_note = "not measured: no usable CUDA device on this machine"
    if cuda_usable():  # pragma: no cover - needs a GPU
        variant = "fp16" if "fp16" in fp32.card.variants else "fp32"
        engines["ort_cuda"] = OnnxPriorModel(model_dir, provider="cuda", variant=variant,
                                             batch_size=max(batch_size, 256)).predict
        cuda_note = f"measured ({variant})"

    outputs = {name: fn(texts[: 2 * batch_size]) for name, fn in engines.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, fn in engines.items():
            t = time.perf_counter()
            outputs[name] = fn(texts)
            times[name].append(time.perf_counter() - t)
    results = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        results[name] = {"headlines_per_s": round(n / med, 2), "median_seconds": round(med, 3),
                         "round_seconds": [round(t, 3) for t in ts]}
    torch_seconds = statistics.median(times["torch_eager"])  # ratios from unrounded medians
    ratios = {f"{name}_vs_torch_eager": round(torch_seconds / statistics.median(ts), 2)
              for name, ts in times.items() if name != "torch_eager"}
    agreement = {f"{name}_max_abs_diff_ctr_vs_torch": float(np.max(np.abs(outputs[name] - outputs["torch_eager"])))
                 for name in engines if name != "torch_eager"}
    # Ranking agreement too: a fast int8 model that reorders headlines is not a win.
    agreement.update({f"{name}_pearson_ctr_vs_torch": float(np.corrcoef(outputs[name], outputs["torch_eager"])[0, 1])
                      for name in engines if name != "torch_eager"})
    int8_card = fp32.card.validation.get("int8") or {}
    int8_build = {"method": int8_card.get("method", "MatMulNBits 8-bit (older export)" if "int8" in results else None),
                  "alpha": (int8_card.get("quantization") or {}).get("alpha"),
                  "rejected": int8_card.get("rejected")}
    met = {key: ratios.get(key, 0.0) >= goal for key, goal in TARGETS.items() if key in ratios}
    if "ort_cuda" in results:
        met["cuda_headlines_per_s"] = results["ort_cuda"]["headlines_per_s"] >= TARGETS["cuda_headlines_per_s"]
    load = os.getloadavg()
    return {
        "benchmark": "priors",
        "model_version": fp32.model_version,
        "n_headlines": n,
        "batch_size": batch_size,
        "rounds": rounds,
        "results": results,
        "ratios": ratios,
        "targets": TARGETS,
        "targets_met": met,
        "agreement": agreement,
        "int8_build": int8_build,
        "cuda": cuda_note,
        "machine": {"cpu_count": os.cpu_count(), "loadavg_1_5_15": [round(x, 2) for x in load],
                    "platform": platform.platform(), "torch_threads": _torch_threads()},
        "note": "figures from a shared machine; loadavg shows how loaded it was",
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def register(bench_app: typer.Typer) -> None:
    """Add ``lola bench priors``."""

    @bench_app.command("priors")
    def priors(
        model: Path = typer.Option(Path("models/ctr-onnx"), "--model", help="Exported model folder."),
        train_dir: Optional[Path] = typer.Option(None, "--train-dir", help="Training folder for torch eager "
                                                 "(default: the one named in the model card)."),
        data: Optional[Path] = typer.Option(None, "--data", help="Upworthy CSV (default: the shared dev CSV)."),
        n: int = typer.Option(256, "--n", help="Headlines per round."),
        batch_size: int = typer.Option(32, "--batch-size"),
        rounds: int = typer.Option(3, "--rounds"),
        as_json: bool = typer.Option(False, "--json", help="Print JSON (always JSON; kept for symmetry)."),
    ) -> None:
        """Headlines/s: torch eager vs ONNX Runtime fp32 vs int8 (and CUDA when present)."""
        from lola.errors import ConfigError, DataError

        if n < 1 or batch_size < 1 or rounds < 1:
            raise ConfigError("--n, --batch-size and --rounds must be >= 1")
        if not (model / "model_card.json").is_file():
            raise DataError(f"--model {model}: no model_card.json; build it with `make model`")
        if data is None:
            from lola.paths import upworthy_csv

            data = upworthy_csv()
        import logging

        logging.basicConfig(level=logging.WARNING, format="lola: %(message)s")
        from lola.export.base import quiet_transformers

        quiet_transformers()
        report = run_bench(model, train_dir, data, n, batch_size, rounds)
        typer.echo(json.dumps(report, indent=2))
