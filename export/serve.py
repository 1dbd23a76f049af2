"""Serve the exported CTR prior model with ONNX Runtime.

Imports only onnxruntime, tokenizers and numpy (plus the standard library and
:mod:`lola.errors`): no torch, no transformers. A test checks ``sys.modules`` in
a fresh interpreter.

Usage::

    model = OnnxPriorModel("models/ctr-onnx")          # provider="auto"
    priors = model.predict(["Headline A", "Headline B"])  # float64 CTRs in [0, 1]

It is the worker's ``PriorProvider``: ``predict(texts) -> float64 array in [0, 1]``.
"""

from __future__ import annotations

import ctypes
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from lola.errors import ConfigError, DataError, ModelIntegrityError
from lola.export.card import CARD_FILE, ModelCard, ReadoutEntry, head_ctr  # noqa: F401 (CARD_FILE: re-exported)
from lola.export.digest import bytes_sha256, file_sha256
from lola.export.level import WeekLevel, week_index
from lola.export.projection import EmbeddingProjection
from lola.export.text import model_text

log = logging.getLogger("lola.export.serve")

VARIANTS = ("fp32", "int8", "fp16")


def cuda_usable() -> bool:
    """True only when a CUDA driver loads and reports at least one device.

    onnxruntime-gpu lists CUDAExecutionProvider even on machines without CUDA,
    so the list alone proves nothing.
    """
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return False
        lib = ctypes.CDLL("libcuda.so.1")
        if lib.cuInit(0) != 0:
            return False
        count = ctypes.c_int(0)
        return lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except OSError:
        return False


def read_card(model_dir: str | Path) -> tuple[ModelCard, str]:
    """The validated model card and its sha256 (the model version)."""
    return ModelCard.load(model_dir)


def verify_files(model_dir: str | Path, card: ModelCard, names: Sequence[str] | None = None) -> None:
    """Check the sha256 of each named file (default: all) against the card, or raise ModelIntegrityError."""
    files = card.files
    for name in names if names is not None else sorted(files):
        expected = files.get(name)
        if expected is None:
            raise ModelIntegrityError(f"{model_dir}: model card lists no sha256 for {name}")
        path = Path(model_dir) / name
        if not path.is_file():
            raise ModelIntegrityError(f"{model_dir}: {name} is missing")
        actual = file_sha256(path)
        if actual != expected.sha256:
            raise ModelIntegrityError(
                f"{path}: sha256 {actual[:12]}… differs from the model card's {expected.sha256[:12]}…"
            )


def read_verified(model_dir: str | Path, card: ModelCard, name: str) -> bytes:
    """The bytes of ``name``, read once and checked against the card's sha256.

    The caller uses these very bytes (ONNX Runtime, the tokenizer, the readout), so a
    file swapped after the check can never be the one that is served.
    """
    expected = card.files.get(name)
    if expected is None:
        raise ModelIntegrityError(f"{model_dir}: model card lists no sha256 for {name}")
    path = Path(model_dir) / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelIntegrityError(f"{model_dir}: {name} is missing") from None
    except OSError as exc:
        raise ModelIntegrityError(f"{model_dir}: cannot read {name} ({exc.strerror or exc})") from None
    actual = bytes_sha256(data)
    if actual != expected.sha256:
        raise ModelIntegrityError(f"{path}: sha256 {actual[:12]}… differs from the model card's {expected.sha256[:12]}…")
    return data


class OnnxPriorModel:
    """CTR priors from the exported model: batched, clamped to [0, 1], torch-free.

    Parameters
    ----------
    model_dir
        Folder written by ``lola priors export`` (model_card.json, ONNX files, tokenizer.json).
    provider
        ``"auto"`` (CUDA only when really usable, else CPU), ``"cpu"`` or ``"cuda"``.
    variant
        ``"auto"`` (fp16 on CUDA when exported, else fp32), ``"fp32"``, ``"int8"`` or ``"fp16"``.
    batch_size
        Rows per ONNX Runtime call.
    intra_op_threads
        ONNX Runtime threads (0: its default).
    readout
        Apply the model's refitted linear readout (``readout.json``, see
        :mod:`lola.export.readout`) when the card has one: predictions are then
        ``level + embedding @ weights + bias`` instead of the network's own head.
        ``False`` serves the network's head (used to fit and to evaluate the readout).
    """

    def __init__(
        self,
        model_dir: str | Path,
        provider: str = "auto",
        variant: str = "auto",
        batch_size: int = 64,
        intra_op_threads: int = 0,
        readout: bool = True,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if provider not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"provider must be auto, cpu or cuda, got {provider!r}")
        if variant not in ("auto", *VARIANTS):
            raise ConfigError(f"variant must be auto or one of {VARIANTS}, got {variant!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.model_dir = Path(model_dir)
        self.card, card_sha = read_card(self.model_dir)
        self.model_version = card_sha[:16]
        self.batch_size = batch_size

        use_cuda = provider == "cuda" or (provider == "auto" and cuda_usable())
        if provider == "cuda" and not cuda_usable():
            raise ConfigError("provider='cuda' asked for, but no usable CUDA device was found")
        variants = self.card.variants
        if variant == "auto":
            variant = "fp16" if use_cuda and "fp16" in variants else "fp32"
        if variant not in variants:
            raise ModelIntegrityError(f"{model_dir}: no {variant} model exported (have {sorted(variants)})")
        self.variant = variant
        onnx_name = variants[variant]
        tokenizer_name = self.card.tokenizer.file
        readout_entry = self.card.readout if readout else None
        readout_file = [readout_entry.file] if readout_entry else []
        onnx_bytes = read_verified(self.model_dir, self.card, onnx_name)
        tokenizer_bytes = read_verified(self.model_dir, self.card, tokenizer_name)
        readout_bytes = read_verified(self.model_dir, self.card, readout_file[0]) if readout_file else None
        proj_entry = self.card.projection
        proj_bytes = read_verified(self.model_dir, self.card, proj_entry.file) if proj_entry else None
        external = self.card.external_data.get(onnx_name, [])
        # External weight files (only for models above protobuf's 2 GB) are still read by
        # ONNX Runtime from the folder: checked here by path, so only they keep a
        # time-of-check/time-of-use window (docs/operations/model-rollout.md).
        verify_files(self.model_dir, self.card, external)

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no wall of provider warnings
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        if external:
            options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                             str(self.model_dir))
        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"])
        # From the verified bytes, never by path: what was hashed is what runs.
        self.session = ort.InferenceSession(onnx_bytes, options, providers=providers)
        del onnx_bytes
        self.provider = self.session.get_providers()[0]
        if use_cuda and self.provider != "CUDAExecutionProvider":
            log.warning("CUDA looked usable but ONNX Runtime fell back to %s", self.provider)
        log.info("prior model %s (%s, %s) on %s", self.model_version, self.variant, onnx_name, self.provider)

        try:
            self.tokenizer = Tokenizer.from_str(tokenizer_bytes.decode("utf-8"))
        except Exception as exc:  # UnicodeDecodeError, or the plain Exception tokenizers raises
            raise ModelIntegrityError(f"{self.model_dir / tokenizer_name}: not a tokenizer ({exc})") from None
        tok = self.card.tokenizer
        self.pad_id = tok.pad_token_id
        self.max_length = tok.max_length
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        self.text_mode = self.card.text_mode
        scaling = self.card.target_scaling
        self.mean, self.std = scaling.mean, scaling.std
        # level_deviation models predict a within-test deviation; the week's level is added back.
        self.week_level = WeekLevel.from_dict(scaling.week_level) if scaling.week_level else None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.embedding_dim = (self.session.get_outputs()[self.output_names.index("embedding")].shape[-1]
                              if "embedding" in self.output_names else None)
        self.readout_weights: np.ndarray | None = None
        self.readout_bias = 0.0
        if readout_entry:
            self._load_readout(readout_entry, readout_bytes)
        #: The arm-feature projection of the embedding (lola.export.projection); None in a model
        #: exported before it, whose LLM-LinUCB arms then keep hashed text features.
        self.projection: EmbeddingProjection | None = None
        if proj_bytes is not None:
            proj = EmbeddingProjection.from_json(proj_bytes, str(self.model_dir / proj_entry.file))
            if self.embedding_dim is None or proj.embedding_dim != int(self.embedding_dim) or proj.dim != proj_entry.dim:
                raise ModelIntegrityError(f"{self.model_dir / proj_entry.file}: a {proj.embedding_dim} -> {proj.dim} "
                                          f"projection does not fit this model (embedding size {self.embedding_dim}, "
                                          f"card dim {proj_entry.dim})")
            self.projection = proj

    def _load_readout(self, entry: ReadoutEntry, raw: bytes) -> None:
        path = self.model_dir / entry.file
        try:
            data = json.loads(raw)
            weights = np.asarray(data["weights"], dtype=np.float64)
            bias = float(data["bias"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelIntegrityError(f"{path}: not a readout file ({exc})") from None
        if self.embedding_dim is None or weights.shape != (int(self.embedding_dim),) or not np.isfinite(weights).all():
            raise ModelIntegrityError(f"{path}: {weights.shape[0]} finite readout weights expected "
                                      f"{self.embedding_dim} (the embedding size)")
        self.readout_weights, self.readout_bias = weights, bias

    # -- encoding -----------------------------------------------------------
    def _texts(self, texts: Sequence[str], contexts: Sequence[str] | None) -> list[str]:
        if isinstance(texts, str):
            raise DataError("predict() takes a list of strings, not one string")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise DataError(f"text {i} is {type(t).__name__}, not str")
        if contexts is not None and len(contexts) != len(texts):
            raise DataError(f"{len(contexts)} contexts for {len(texts)} texts")
        ctx = list(contexts) if contexts is not None else [""] * len(texts)
        return [model_text(t, c, self.text_mode) for t, c in zip(texts, ctx)]

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded ``input_ids`` and ``attention_mask`` (int64) for already prepared texts."""
        encodings = self.tokenizer.encode_batch(list(texts))
        width = max(1, max((len(e.ids) for e in encodings), default=1))
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for i, e in enumerate(encodings):
            n = len(e.ids)
            if n == 0:  # an empty headline still needs one token to pool
                ids[i, 0] = self.pad_id
                mask[i, 0] = 1
                continue
            ids[i, :n] = e.ids
            mask[i, :n] = 1
        return ids, mask

    def _run(self, texts: list[str], *want: str) -> list[np.ndarray]:
        # Sort by length so each batch pads little; restore the order at the end.
        lengths = [len(t) for t in texts]
        order = np.argsort(lengths, kind="stable")
        chunks: list[list[np.ndarray]] = [[] for _ in want]
        for start in range(0, len(texts), self.batch_size):
            batch = [texts[i] for i in order[start : start + self.batch_size]]
            ids, mask = self.encode(batch)
            feeds = {"input_ids": ids, "attention_mask": mask}
            feeds = {k: v for k, v in feeds.items() if k in self.input_names}
            for j, out in enumerate(self.session.run(list(want), feeds)):
                chunks[j].append(np.asarray(out, dtype=np.float32).reshape(len(batch), -1))
        results = []
        for parts in chunks:
            stacked = np.concatenate(parts, axis=0)
            result = np.empty_like(stacked)
            result[order] = stacked
            results.append(result)
        return results

    # -- public API ---------------------------------------------------------
    def raw_scores(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> np.ndarray:
        """The network's standardised output ``z`` (float64), before scaling and clamping."""
        prepared = self._texts(texts, contexts)
        if not prepared:
            return np.zeros(0, dtype=np.float64)
        return self._run(prepared, "logits")[0][:, 0].astype(np.float64)

    def level(self, test_weeks: Sequence[int | None] | None, n: int) -> np.ndarray:
        """The week level added to each prediction (zeros for an absolute-CTR model).

        ``test_weeks`` are archive ``YYYYWW`` values; ``None`` (a live variant) takes the
        most recent level the model knows.
        """
        if self.week_level is None:
            return np.zeros(n)
        if test_weeks is None:
            return self.week_level(None, n)
        if len(test_weeks) != n:
            raise DataError(f"{len(test_weeks)} test weeks for {n} texts")
        return self.week_level(np.array([week_index(w) for w in test_weeks], dtype=np.float64))

    def predict(self, texts: Sequence[str], contexts: Sequence[str] | None = None,
                test_weeks: Sequence[int | None] | None = None) -> np.ndarray:
        """Predicted CTR per text: float64, clamped to [0, 1], in input order."""
        if self.readout_weights is not None:
            return self.predict_and_embed(texts, contexts, test_weeks)[0]
        return self.to_ctr(self.raw_scores(texts, contexts), test_weeks)

    def network_outputs(self, texts: Sequence[str], contexts: Sequence[str] | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
        """The network's standardised score ``z`` (float64) and embedding (float32) from one pass."""
        if self.embedding_dim is None:
            raise ModelIntegrityError(f"{self.model_dir}: this export has no embedding output")
        prepared = self._texts(texts, contexts)
        if not prepared:
            return np.zeros(0, dtype=np.float64), np.zeros((0, int(self.embedding_dim)), dtype=np.float32)
        logits, emb = self._run(prepared, "logits", "embedding")
        return logits[:, 0].astype(np.float64), emb.astype(np.float32)

    def to_ctr(self, z: np.ndarray, test_weeks: Sequence[int | None] | None,
               embedding: np.ndarray | None = None) -> np.ndarray:
        """CTRs in [0, 1] from :meth:`network_outputs`: the readout when loaded and ``embedding``
        is given, else the network's head (:func:`~lola.export.card.head_ctr`); the week level is added to both."""
        level = self.level(test_weeks, len(z))
        base = self.mean + level
        if self.readout_weights is not None and embedding is not None:
            # The readout predicts the training target in CTR units (deviation or CTR).
            ctr = level + embedding.astype(np.float64) @ self.readout_weights + self.readout_bias
        else:
            ctr = head_ctr(self.mean, self.std, z, level)
        ctr = np.where(np.isfinite(ctr), ctr, base)
        return np.clip(ctr, 0.0, 1.0)

    def predict_and_embed(self, texts: Sequence[str], contexts: Sequence[str] | None = None,
                          test_weeks: Sequence[int | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` and :meth:`embed` from one pass of the network (half the cost of both)."""
        z, emb = self.network_outputs(texts, contexts)
        return self.to_ctr(z, test_weeks, emb), emb

    def predict_with_features(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """CTRs of :meth:`predict` and the arm features ``z`` (float64[n, k], the model's
        :attr:`projection` of its embedding) from one pass; ``None`` features without a projection."""
        if self.projection is None:
            return self.predict(texts), None
        z, emb = self.network_outputs(texts)
        return self.to_ctr(z, None, emb), self.projection.transform(emb)

    def embed(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> np.ndarray:
        """Mean-pooled last hidden state (float32 ``[n, d]``) of the fine-tuned model."""
        if self.embedding_dim is None:
            raise ModelIntegrityError(f"{self.model_dir}: this export has no embedding output")
        prepared = self._texts(texts, contexts)
        if not prepared:
            return np.zeros((0, int(self.embedding_dim)), dtype=np.float32)
        return self._run(prepared, "embedding")[0].astype(np.float32)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.predict(texts)
