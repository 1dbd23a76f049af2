"""Choosing the prior provider: ONNX model, constant, HTTP service or a plug-in (docs/priors-providers.md).

``LOLA_PRIOR_PROVIDER`` names one of ``onnx``, ``constant``, ``http``, ``none`` or a
Python import path ``package.module:factory``. A factory is called with the worker's
settings and returns a :class:`~lola.stream.priors.PriorProvider` (``predict(texts)``)
or a :class:`RequestPriorProvider` (``predict_requests(requests)``, which also sees
each variant's experiment, id and sibling texts). Whatever it returns runs on the
prior thread, with the worker's timeout: it can never block a decision.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import urllib.error
import urllib.request
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from lola.errors import ConfigError, LolaError
from lola.stream.priors import ConstantPriorProvider, OnnxModelProvider, PriorProvider

log = logging.getLogger("lola.stream.priors")


@runtime_checkable
class RequestPriorProvider(Protocol):
    """A provider that sees whole requests (experiment_id, variant_id, text, siblings)."""

    def predict_requests(self, requests: Sequence[Any]) -> np.ndarray:
        """float64[len(requests)]: a prior in [0, 1], or NaN for "no prior for this one"."""
        ...


class PriorHttpError(LolaError):
    """The HTTP prior service failed (status, size, shape); that batch gets no priors."""


class HttpPriorProvider:
    """POST the variants to a prior service; its answer is the priors.

    Request body: ``{"items": [{"experiment_id", "variant_id", "text", "siblings": [...]}]}``.
    Answer: ``{"priors": [p, ...]}``, one number in [0, 1] (or ``null``: no prior) per
    item, in order. A non-2xx status, a timeout, an answer larger than
    ``max_response_bytes`` or of the wrong shape raises: the prior thread logs it and the
    batch's variants get no prior (``lola_prior_fallbacks_total{reason="error"}``).

    Written on urllib (stdlib) rather than a client library: one POST with a timeout
    and a bounded read needs nothing more, and the serving image stays small.
    """

    def __init__(self, url: str, timeout_s: float = 2.0, max_response_bytes: int = 1_048_576) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"prior http url must start with http:// or https://, got {url!r}")
        self.url = url
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes

    def predict_requests(self, requests: Sequence[Any]) -> np.ndarray:
        body = json.dumps({"items": [{"experiment_id": r.experiment_id, "variant_id": r.variant_id,
                                      "text": r.text, "siblings": list(r.siblings)} for r in requests]}).encode()
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read(self.max_response_bytes + 1)
        except urllib.error.HTTPError as exc:
            raise PriorHttpError(f"prior service answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:  # refused, DNS, timeout
            raise PriorHttpError(f"prior service unreachable: {getattr(exc, 'reason', exc)}") from None
        if len(raw) > self.max_response_bytes:
            raise PriorHttpError(f"prior service answer larger than {self.max_response_bytes} bytes")
        try:
            priors = json.loads(raw)["priors"]
        except (ValueError, KeyError, TypeError):
            raise PriorHttpError("prior service answer is not {\"priors\": [...]}") from None
        if not isinstance(priors, list) or len(priors) != len(requests):
            raise PriorHttpError(f"prior service returned {len(priors) if isinstance(priors, list) else 'no'} "
                                 f"priors for {len(requests)} items")
        out = np.full(len(priors), np.nan)
        for i, p in enumerate(priors):
            if isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p):
                out[i] = float(p)
            elif p is not None:
                out[i] = -1.0  # not a number: counted as out_of_range
        return out


def call_factory(path: str, settings: Any, what: str) -> Any:
    """Import ``package.module:factory`` and return ``factory(settings)`` (the worker's plug-ins:
    prior providers, compliance classifiers); every failure is one ConfigError line naming ``what``."""
    module_name, _, attr = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{what} {path!r} cannot be imported: {exc}") from None
    try:
        return factory(settings)
    except Exception as exc:  # a plug-in's own failure: one line at start, not a traceback
        raise ConfigError(f"{what} {path!r} failed to start: {type(exc).__name__}: {exc}") from None


def load_plugin(path: str, settings: Any) -> PriorProvider | RequestPriorProvider:
    """Import ``package.module:factory`` and call ``factory(settings)``."""
    provider = call_factory(path, settings, "prior provider")
    if not isinstance(provider, (PriorProvider, RequestPriorProvider)):
        raise ConfigError(f"prior provider {path!r} returned {type(provider).__name__}, which has neither "
                          "predict(texts) nor predict_requests(requests)")
    return provider


def provider_from_settings(settings: Any) -> PriorProvider | RequestPriorProvider | None:
    """The provider ``LOLA_PRIOR_PROVIDER`` names; unset: constant if set, else ONNX if a model dir, else none."""
    choice = settings.prior_provider
    if choice is None:
        choice = ("constant" if settings.constant_prior is not None else
                  "onnx" if settings.model_dir is not None else "none")
    if choice == "none":
        return None
    if choice == "constant":
        if settings.constant_prior is None:
            raise ConfigError("LOLA_PRIOR_PROVIDER=constant needs LOLA_CONSTANT_PRIOR (or --constant-prior)")
        return ConstantPriorProvider(settings.constant_prior)
    if choice == "onnx":
        if settings.model_dir is None:
            raise ConfigError("LOLA_PRIOR_PROVIDER=onnx needs LOLA_MODEL_DIR (or --model)")
        return OnnxModelProvider(settings.model_dir, variant=settings.model_variant, device=settings.model_device)
    if choice == "http":
        if not settings.prior_http_url:
            raise ConfigError("LOLA_PRIOR_PROVIDER=http needs LOLA_PRIOR_HTTP_URL")
        return HttpPriorProvider(settings.prior_http_url, settings.prior_http_timeout_s,
                                 settings.prior_http_max_response_bytes)
    return load_plugin(choice, settings)
