"""Session-wide fixtures: the shared data, and a tiny random-initialised Llama (trained and exported)
that export and stream tests share. Broker fixtures live in tests/stream/conftest.py."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def upworthy_csv():
    from lola.paths import upworthy_csv

    path = upworthy_csv()
    if not path.is_file():
        pytest.fail(f"shared Upworthy data missing at {path}")
    return path


@pytest.fixture(scope="session")
def lola_commands() -> set[str]:
    """Command paths the ``lola`` CLI offers, e.g. ``{"worker", "loadgen closed"}``."""
    import typer

    from lola.cli import app

    found: set[str] = set()

    def walk(cmd, prefix: str) -> None:
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            path = f"{prefix} {name}".strip()
            found.add(path)
            walk(sub, path)

    walk(typer.main.get_command(app), "")
    return found


WORDS = ("you won't believe what this dog did next the one where a priest picks fight and loses "
         "science says people love headlines about cats climate money health family music why how").split()


def make_tiny_base(path: Path, seed: int = 0) -> Path:
    """A 2-layer Llama (hidden 32) with a word-level tokenizer, saved as a Hugging Face checkpoint."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "[UNK]": 3}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="[UNK]",
                                   bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def write_packages_csv(path: Path, n_tests: int = 30, seed: int = 0) -> Path:
    """A synthetic package CSV in the archive's columns; CTR rises with the word 'dog'."""
    import numpy as np

    rng = np.random.default_rng(seed)
    columns = ["clickability_test_id", "eyecatcher_id", "headline", "lede", "excerpt", "impressions",
               "clicks", "significance", "first_place", "winner", "test_week"]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for t in range(n_tests):
            for h in range(3):
                words = rng.choice(WORDS, size=int(rng.integers(3, 9)))
                headline = " ".join(words) + f" {t} {h}"
                ctr = 0.01 + 0.02 * ("dog" in words)
                imps = int(rng.integers(1500, 4000))
                w.writerow([f"t{t:03d}", f"e{t:03d}", headline, "<p>A lede about it.</p>", "An excerpt.",
                            imps, int(rng.binomial(imps, ctr)), "", "", "", "201401"])
    return path


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return make_tiny_base(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    return write_packages_csv(tmp_path_factory.mktemp("data") / "packages.csv")


TINY_STEPS = 4


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory, tiny_base, tiny_csv) -> Path:
    from lola.export.config import make_config
    from lola.export.train import train

    out = tmp_path_factory.mktemp("tiny-train")
    config = make_config("quick", max_steps=TINY_STEPS, min_impressions=0, train_limit=None, checkpoint_every=2,
                         lora_last_layers=None,
                         learning_rate=1e-2, target="ctr")  # level_deviation: tests/export/test_level.py
    train(tiny_csv, out, config, base=str(tiny_base), progress=False)
    return out


@pytest.fixture(scope="session")
def exported_tiny(tmp_path_factory, trained_tiny) -> Path:
    from lola.export.onnx_export import export_model

    out = tmp_path_factory.mktemp("tiny-onnx") / "model"
    export_model(trained_tiny, out, ("int8",))
    return out


@pytest.fixture(scope="session")
def fresh_serving_run():
    """Serve two headlines from ``model_dir`` in a fresh interpreter; return which training-side
    packages that imported (serving must need none) and what it served."""
    heavy = ("torch", "transformers", "optimum", "peft", "sklearn", "scipy")

    def run(model_dir) -> dict:
        code = (
            "import sys, json\n"
            "from lola.export.serve import OnnxPriorModel\n"
            f"m = OnnxPriorModel({str(model_dir)!r})\n"
            "p = m.predict(['a dog', 'a cat'])\n"
            f"bad = sorted(k for k in sys.modules if k.split('.')[0] in {heavy!r})\n"
            "print(json.dumps({'bad': bad, 'n': len(p), 'readout': m.readout_weights is not None}))\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    return run
