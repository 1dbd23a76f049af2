"""The model's embedding reduced to a few arm features: the one definition (replay and worker).

LLM-LinUCB needs each arm as a short feature vector. The prior model's ``embedding`` output is
hundreds of numbers wide (576 for SmolLM2-135M), far too wide for a d x d A^-1 per experiment,
so it is reduced by a projection fitted once, on the train-split headlines only:

    z(e) = ((e - mean) @ V_k) / scale / sqrt(k)          float64[k]

``mean`` is the train embeddings' mean, ``V_k`` their top-k right singular vectors (each
signed so its largest-magnitude entry is positive, which makes the fit deterministic; a sign
flip is an orthogonal change of basis and changes no LinUCB decision), and ``scale`` the
standard deviation of each projected train coordinate (+1e-9): every coordinate has unit
variance on train, and ``||z||`` is about 1, like the hashed text features.

:func:`fit_projection` is the recipe; ``lola priors export`` runs it on the train split of the
training CSV and stores the result as ``projection.json`` in the model folder, listed (and
sha256-checked) in the model card like every other file (docs/model-card.md).
:class:`lola.export.serve.OnnxPriorModel` loads it, so the worker's prior provider returns
``z`` with each CTR; ``lola replay`` runs the same :func:`fit_projection` on its own train
texts. NumPy only: the serving path imports this module.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lola.errors import ConfigError, ModelIntegrityError

PROJECTION_FILE = "projection.json"
PROJECTION_FORMAT = 1
PROJECTION_KIND = "mean_svd"
#: Components stored by ``lola priors export`` (the replay's LinUCB feature width).
DEFAULT_DIM = 16
#: Most components a projection may have (the worker's feature_dim is at most 64).
MAX_DIM = 64
SCALE_EPS = 1e-9


@dataclass(frozen=True)
class EmbeddingProjection:
    """``z(e) = ((e - mean) @ components) / scale / sqrt(k)`` (see the module docstring)."""

    mean: np.ndarray        # float64[D]
    components: np.ndarray  # float64[D, k]
    scale: np.ndarray       # float64[k], > 0

    def __post_init__(self) -> None:
        for name in ("mean", "components", "scale"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        m, c, s = self.mean, self.components, self.scale
        if m.ndim != 1 or c.ndim != 2 or s.ndim != 1 or c.shape != (m.shape[0], s.shape[0]):
            raise ModelIntegrityError(f"projection shapes do not fit: mean {m.shape}, components {c.shape}, "
                                      f"scale {s.shape} (expected [D], [D, k], [k])")
        if not 1 <= s.shape[0] <= MAX_DIM:
            raise ModelIntegrityError(f"projection has {s.shape[0]} components; 1 to {MAX_DIM} allowed")
        if not (np.isfinite(m).all() and np.isfinite(c).all() and np.isfinite(s).all()) or (s <= 0).any():
            raise ModelIntegrityError("projection values must be finite, and its scales positive")

    @property
    def dim(self) -> int:
        return int(self.scale.shape[0])

    @property
    def embedding_dim(self) -> int:
        return int(self.mean.shape[0])

    def transform(self, embeddings: Any) -> np.ndarray:
        """z of each row of ``embeddings`` (float[n, D]): float64[n, k]."""
        e = np.asarray(embeddings, dtype=np.float64)
        if e.ndim != 2 or e.shape[1] != self.embedding_dim:
            raise ModelIntegrityError(f"embeddings must be [n, {self.embedding_dim}], got {list(e.shape)}")
        return (e - self.mean) @ self.components / self.scale / math.sqrt(self.dim)

    def to_json(self) -> dict[str, Any]:
        return {"format": PROJECTION_FORMAT, "kind": PROJECTION_KIND, "dim": self.dim,
                "embedding_dim": self.embedding_dim, "mean": self.mean.tolist(),
                "components": self.components.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_json(cls, raw: bytes | str, source: str = PROJECTION_FILE) -> "EmbeddingProjection":
        """Parse ``projection.json``; ModelIntegrityError with one line if it is not one."""
        try:
            data = json.loads(raw)
            if data.get("format") != PROJECTION_FORMAT or data.get("kind") != PROJECTION_KIND:
                raise ValueError(f"format {data.get('format')!r} kind {data.get('kind')!r}, "
                                 f"this lola reads format {PROJECTION_FORMAT} kind {PROJECTION_KIND}")
            proj = cls(np.asarray(data["mean"], dtype=np.float64), np.asarray(data["components"], dtype=np.float64),
                       np.asarray(data["scale"], dtype=np.float64))
        except ModelIntegrityError as exc:
            raise ModelIntegrityError(f"{source}: {exc}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelIntegrityError(f"{source}: not a projection file ({exc})") from None
        if proj.dim != data.get("dim") or proj.embedding_dim != data.get("embedding_dim"):
            raise ModelIntegrityError(f"{source}: dim/embedding_dim do not match the arrays")
        return proj


def fit_projection(embeddings: Any, dim: int = DEFAULT_DIM) -> EmbeddingProjection:
    """Fit the projection on the train texts' embeddings (float[n, D], n >= 2).

    ``k = min(dim, D, n - 1)`` components: n rows centred span at most n - 1 directions.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
        raise ConfigError(f"projection dim must be an integer in [1, {MAX_DIM}], got {dim!r}")
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 2 or e.shape[1] < 1 or not np.isfinite(e).all():
        raise ConfigError(f"need finite embeddings [n >= 2, D >= 1] to fit a projection, got {list(e.shape)}")
    k = min(dim, e.shape[1], e.shape[0] - 1)
    mean = e.mean(axis=0)
    _, _, vt = np.linalg.svd(e - mean, full_matrices=False)
    comps = vt[:k].T.copy()
    signs = np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(k)])
    comps *= np.where(signs == 0, 1.0, signs)
    scale = ((e - mean) @ comps).std(axis=0) + SCALE_EPS
    return EmbeddingProjection(mean, comps, scale)
