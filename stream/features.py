"""Arm feature vectors of the worker's LinUCB policies (``linucb``, ``llm_linucb``).

One definition, computed in the stream from the variant's text when the variant is
added, so an arm is servable at once and needs no model:

    x = [1, h(text) / ||h(text)||]      float64[d], d = the worker's ``feature_dim``

``h`` is signed feature hashing of the lower-cased word tokens into ``d - 1`` buckets:
the bucket and the sign of a token come from its BLAKE2b-64 digest (deterministic
across processes and Python versions, unlike ``hash()``). The leading 1 is the
intercept. ``llm_linucb`` adds the LLM prior CTR through the prior path (``n_aux``),
like the other ``llm_`` policies.

``llm_linucb`` arms (and contextual arms with ``arm_features: "model"``) then switch to the
prior model's own features when the prior arrives with them (:func:`model_features`):

    x = [1, z_1, ..., z_{d-1}]    z = the model's projected embedding (lola.export.projection)

``z`` has k components (16 by default); the first ``d - 1`` are used, zeros follow when
``d - 1 > k``. A model without a projection (exported before it) sends no ``z``: the arm
keeps its hashed row (docs/policies.md).

Hand-written rather than scikit-learn's ``HashingVectorizer`` because scikit-learn is
only an optional extra (``analysis``), not a worker dependency.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

_TOKEN = re.compile(r"\w+", re.UNICODE)
#: Largest feature_dim the worker accepts (A^-1 is d x d per experiment).
MAX_FEATURE_DIM = 64


def signed_hash(s: str) -> tuple[int, float]:
    """(bucket index, sign) of one feature-hashed string: BLAKE2b-64, index = v >> 1, sign from
    the low bit. The one hash of text tokens here and of context fields (lola.stream.context)."""
    v = int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")
    return v >> 1, 1.0 if v & 1 else -1.0


def text_features(text: str, dim: int) -> np.ndarray:
    """float64[dim] LinUCB features of one variant text (see the module docstring)."""
    if dim < 1:
        raise ValueError("dim must be >= 1")
    x = np.zeros(dim)
    x[0] = 1.0
    if dim == 1:
        return x
    h = x[1:]  # a view: filled in place
    for token in _TOKEN.findall(text.lower()):
        bucket, sign = signed_hash(token)
        h[bucket % (dim - 1)] += sign
    norm = float(np.sqrt(h @ h))
    if norm > 0:
        h /= norm
    return x


def model_features(z: np.ndarray, dim: int) -> np.ndarray:
    """float64[dim] arm features from the prior model's projected embedding ``z`` (float[k],
    :meth:`lola.export.projection.EmbeddingProjection.transform`): ``[1, z[:dim-1], 0...]``."""
    if dim < 1:
        raise ValueError("dim must be >= 1")
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    x = np.zeros(dim)
    x[0] = 1.0
    n = min(dim - 1, z.shape[0])
    x[1:1 + n] = z[:n]
    return x
