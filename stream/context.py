"""The request's user context as features: a declared, versioned featurizer per experiment.

An experiment becomes contextual when its first ``variant`` event's settings carry
``"contextual"`` (docs/contextual.md)::

    "contextual": {"algorithm": "linucb", "alpha": 0.05, "n_aux": 200,
                   "features": {"version": 1,
                                "numeric": {"age": {"mean": 35, "scale": 12}},
                                "categorical": ["segment", "device"]}}

A decision request's ``context`` then becomes ``u`` (float64[user_dim], the worker's
``LOLA_CONTEXT_USER_DIM``)::

    u = [1, clip((v_1 - mean_1) / scale_1, -clip, clip), ..., h(categoricals)]

``u[0] = 1`` is the intercept; a missing numeric field is its mean (0 after scaling); the
categorical fields (and ``user_id`` with ``hash_user_id``) are signed-hashed ("field=value",
BLAKE2b-64) into the remaining ``user_dim - 1 - len(numeric)`` slots; a missing one adds
nothing. Fields the spec does not name are ignored (they still count toward
:data:`MAX_CONTEXT_FIELDS`). A context the featurizer cannot use raises
``EventError("bad_context")`` whose detail names the field and the problem, never a value.

Raw values never leave this module: the join window and checkpoints keep ``u`` only, and
:func:`redact` strips ``context`` and ``user_id`` from a dead-lettered decision request.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lola.errors import EventError
from lola.kernels.contextual_state import ContextualParams
from lola.stream.features import signed_hash

#: Most fields a decision request's context may carry (docs/operations/limits.md).
MAX_CONTEXT_FIELDS = 128
#: Longest categorical value (characters) the featurizer hashes.
MAX_CATEGORY_CHARS = 256
FEATURIZER_VERSIONS = (1,)


class NumericField(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    mean: float = Field(0.0, allow_inf_nan=False)
    scale: float = Field(1.0, gt=0, allow_inf_nan=False)
    clip: float = Field(5.0, gt=0, allow_inf_nan=False)


class FeatureSpec(BaseModel):
    """Which context fields become features, and how (version 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    version: Literal[1] = 1
    numeric: dict[str, NumericField] = Field(default_factory=dict, max_length=MAX_CONTEXT_FIELDS)
    categorical: list[str] = Field(default_factory=list, max_length=MAX_CONTEXT_FIELDS)
    hash_user_id: bool = False


class ContextualSettings(BaseModel):
    """The ``contextual`` variant setting: the algorithm, its parameters and the featurizer."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    algorithm: Literal["linucb", "falcon"] = "linucb"
    alpha: float = Field(0.05, ge=0, le=1e6, allow_inf_nan=False)
    ridge: float = Field(1.0, gt=0, le=1e12, allow_inf_nan=False)
    gamma_scale: float = Field(1.0, ge=0, le=1e9, allow_inf_nan=False)
    first_epoch: float = Field(32.0, ge=1, le=1e12, allow_inf_nan=False)
    n_aux: float = Field(100.0, ge=0, le=1e9, allow_inf_nan=False)
    #: "slot": dummy-coded arms (a_k = [1, e_k], the last of the first arm_dim arms [1, 0]): full rank,
    #: each arm learns its own user weights (Li et al.'s disjoint model); "text": a hashed bag of words
    #: of the variant text (arms share what they learn, but few buckets can make two arms collide);
    #: "model": the prior model's projected embedding ([1, z], lola.stream.features.model_features),
    #: set when the arm's prior arrives (hashed text until then, and for good with a model without
    #: a projection); observations before that stay in A and b under the hashed row.
    arm_features: Literal["slot", "text", "model"] = "slot"
    features: FeatureSpec = Field(default_factory=FeatureSpec)

    def params(self) -> ContextualParams:
        return ContextualParams(self.algorithm, self.alpha, self.ridge, self.gamma_scale, self.first_epoch, self.n_aux)

    @classmethod
    def parse(cls, raw: Any, user_dim: int) -> "ContextualSettings":
        """Validate the setting; ``EventError("invalid_settings")`` with the first problem."""
        try:
            spec = cls.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise EventError("invalid_settings", f"contextual.{where}: {err['msg']}"[:160]) from None
        f = spec.features
        room = user_dim - 1 - len(f.numeric)
        if room < 0 or (room == 0 and (f.categorical or f.hash_user_id)):
            raise EventError("invalid_settings", f"contextual.features: {len(f.numeric)} numeric fields"
                                                 f"{' and categorical ones' if f.categorical else ''} do not fit "
                                                 f"user_dim {user_dim} (LOLA_CONTEXT_USER_DIM)")
        return spec


class Featurizer:
    """``u`` of one experiment's requests (see the module docstring)."""

    def __init__(self, spec: FeatureSpec, user_dim: int) -> None:
        self.spec = spec
        self.width = user_dim
        self._numeric = [(name, f.mean, f.scale, f.clip) for name, f in spec.numeric.items()]
        self._hash0 = 1 + len(self._numeric)
        self._buckets = user_dim - self._hash0

    def __call__(self, context: dict[str, Any] | None, user_id: str | None = None) -> np.ndarray:
        u = np.zeros(self.width)
        u[0] = 1.0
        ctx = context or {}
        if len(ctx) > MAX_CONTEXT_FIELDS:
            raise EventError("bad_context", f"context has {len(ctx)} fields > {MAX_CONTEXT_FIELDS}")
        for i, (name, mean, scale, clip) in enumerate(self._numeric, start=1):
            v = ctx.get(name)
            if v is None:
                continue  # missing: the mean (0 after scaling)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise EventError("bad_context", f"context.{name[:60]} must be a number, got {type(v).__name__}")
            if not math.isfinite(v):
                raise EventError("bad_context", f"context.{name[:60]} is not finite")
            u[i] = _scaled(v, mean, scale, clip)
        for name in self.spec.categorical:
            v = ctx.get(name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise EventError("bad_context", f"context.{name[:60]} must be a string or an integer, "
                                                f"got {type(v).__name__}")
            if isinstance(v, str) and len(v) > MAX_CATEGORY_CHARS:
                raise EventError("bad_context", f"context.{name[:60]} is longer than {MAX_CATEGORY_CHARS} characters")
            b, sign = signed_hash(f"{name}={v}")
            u[self._hash0 + b % self._buckets] += sign
        if self.spec.hash_user_id and user_id is not None:
            b, sign = signed_hash(f"user_id={user_id}")
            u[self._hash0 + b % self._buckets] += sign
        return u


    def numeric_block(self, values: np.ndarray) -> np.ndarray:
        """The numeric slots u[:, 1:1+n] of many rows at once (values float64[n, n_numeric], the
        spec's order, finite): the same scaling as one request's (replays featurize millions)."""
        out = np.empty_like(values, dtype=np.float64)
        for i, (_, mean, scale, clip) in enumerate(self._numeric):
            out[:, i] = _scaled(values[:, i], mean, scale, clip)
        return out


def _scaled(v: Any, mean: float, scale: float, clip: float) -> Any:
    """clip((v - mean) / scale, -clip, clip) for a number or an array."""
    return np.clip((v - mean) / scale, -clip, clip) if isinstance(v, np.ndarray) else min(max((v - mean) / scale, -clip), clip)


_WITHHELD = b'{"redacted":"value withheld: not a JSON object, and it names context or user_id"}'


def redact(value: bytes | None) -> bytes | None:
    """A dead letter's value without the raw user context: ``context`` becomes the list of its
    field names, ``user_id`` a BLAKE2b-64 hex digest. Values that carry neither field are returned as they are; one that is not a JSON object but
    names either field is replaced by a fixed marker (its values cannot be told apart)."""
    if not value or (b'"context"' not in value and b'"user_id"' not in value):
        return value
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return _WITHHELD  # cannot tell the context's values apart: keep none of it
    if not isinstance(obj, dict):
        return value
    if "context" in obj:
        ctx = obj["context"]
        obj["context"] = {"redacted_fields": sorted(str(k)[:60] for k in ctx)[:MAX_CONTEXT_FIELDS]} \
            if isinstance(ctx, dict) else {"redacted": True}
    if "user_id" in obj:
        obj["user_id"] = "blake2b:" + hashlib.blake2b(str(obj["user_id"]).encode(), digest_size=8).hexdigest()
    return orjson.dumps(obj)
