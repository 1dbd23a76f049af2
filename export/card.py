"""The model card (``model_card.json``): one typed, versioned, frozen definition.

Every reader of a card goes through :class:`ModelCard` (serving, the readout, the
evaluation, the replay, the benchmark), so its defaults live here and nowhere else,
and a card is validated once, on load, with one clear message. Torch-free: the serving
path (``export/serve.py``, ``stream/priors.py``) imports this module.
docs/model-card.md documents the format for people who bring their own model.

Unknown keys are kept (``extra="allow"``): an export may record more provenance than
the readers need, and a reader never depends on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lola.errors import ModelIntegrityError
from lola.export.digest import bytes_sha256
from lola.export.text import TEXT_MODES

CARD_FILE = "model_card.json"
CARD_FORMAT = 1
"""The card format this code writes and reads. A later format adds a migration in :func:`_migrate`."""


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")


class TokenizerInfo(_Part):
    """The tokenizer file and how the model was fed."""

    file: str = "tokenizer.json"
    pad_token_id: int = Field(ge=0)
    padding_side: Literal["right", "left"] = "right"
    max_length: int = Field(ge=1)


class TargetScaling(_Part):
    """prior = mean + std * network output (+ the week's level for ``level_deviation``)."""

    kind: str = "standardize"  # as training writes it (lola.export.data.TargetScaling): or "level_deviation"
    mean: float
    std: float = Field(gt=0)
    week_level: dict[str, Any] | None = None


def head_ctr(mean: float, std: float, z: Any, level: Any = 0.0) -> Any:
    """The one definition of score -> CTR: the network head's output ``z`` mapped back through the
    card's :class:`TargetScaling`, ``(mean + level) + std * z`` (``level``: the week level of a
    ``level_deviation`` model, else 0). Not clamped: serving clamps to [0, 1]. Keeps ``z``'s dtype."""
    return (mean + level) + std * z


class FileEntry(_Part):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int | None = Field(None, ge=0)


class ReadoutEntry(_Part):
    """An optional linear readout on the embedding (``lola priors readout``)."""

    file: str
    kind: str
    target: str | None = None


class ProjectionEntry(_Part):
    """The embedding projection of LLM-LinUCB's arm features (``projection.json``,
    :mod:`lola.export.projection`), fitted on the train-split headlines at export."""

    file: str
    kind: str = "mean_svd"
    dim: int = Field(ge=1, le=64)


class ModelCard(_Part):
    """What a prior model folder contains and how to serve it."""

    format: Literal[1] = CARD_FORMAT
    name: str = "lola-ctr-prior"
    target: Literal["ctr", "level_deviation"] = "ctr"
    text_mode: str = "headline"
    tokenizer: TokenizerInfo
    target_scaling: TargetScaling
    variants: dict[str, str] = Field(min_length=1)  # "fp32" / "int8" / "fp16" -> ONNX file name
    files: dict[str, FileEntry] = {}  # every file of the folder, by sha256 (the card itself excepted)
    external_data: dict[str, list[str]] = {}  # ONNX file -> its external weight files
    readout: ReadoutEntry | None = None
    projection: ProjectionEntry | None = None  # absent in models exported before it (hashed arm features)
    hyperparameters: dict[str, Any] = {}  # the training run's TrainConfig
    data: dict[str, Any] = {}  # the training CSV: path, sha256
    base_ref: Any = None  # the base model reference (embedding baselines)
    source_training_dir: str | None = None
    validation: dict[str, Any] = {}  # per variant: ONNX vs torch differences, int8 build
    metrics: dict[str, Any] = {}
    training: dict[str, Any] = {}

    @field_validator("text_mode")
    @classmethod
    def _known_text_mode(cls, value: str) -> str:
        if value not in TEXT_MODES:
            raise ValueError(f"must be one of {', '.join(TEXT_MODES)}, got {value!r}")
        return value

    @classmethod
    def parse(cls, raw: bytes | str | dict, source: str = CARD_FILE) -> "ModelCard":
        """Validate a card (bytes, text or dict); raise ModelIntegrityError with one line."""
        try:
            data = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
        except json.JSONDecodeError as exc:
            raise ModelIntegrityError(f"{source}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ModelIntegrityError(f"{source}: a model card is a JSON object, got {type(data).__name__}")
        try:
            return cls.model_validate(_migrate(data))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "card"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise ModelIntegrityError(f"{source}: invalid model card: {where}: {first['msg']}{more} "
                                      f"(format: docs/model-card.md)") from None

    @classmethod
    def load(cls, model_dir: str | Path) -> tuple["ModelCard", str]:
        """The card of a model folder and its sha256 (the model version)."""
        path = Path(model_dir) / CARD_FILE
        if not path.is_file():
            raise ModelIntegrityError(f"{model_dir}: no {CARD_FILE}; build the model with `lola priors export`")
        raw = path.read_bytes()
        return cls.parse(raw, str(path)), bytes_sha256(raw)

    @staticmethod
    def file_names(raw: bytes) -> list[str]:
        """The names under ``files``, read without validating the rest: only for noticing
        that a model folder changed (stream/priors.py); a bad card is reported by :meth:`load`."""
        try:
            files = json.loads(raw).get("files") or {}
            return sorted(files) if isinstance(files, dict) else []
        except (ValueError, AttributeError):
            return []

    def as_dict(self) -> dict[str, Any]:
        """The JSON object (unknown keys included)."""
        return self.model_dump(mode="json", exclude_unset=True)


def _migrate(data: dict) -> dict:
    """Bring an older card to :data:`CARD_FORMAT`. Format 1 is the first; a card without
    ``format`` predates the field and has format 1's layout."""
    version = data.get("format", CARD_FORMAT)
    if version == CARD_FORMAT:
        return data
    raise ModelIntegrityError(f"model card format {version!r} is not supported (this lola reads {CARD_FORMAT})")
