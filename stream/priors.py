"""Prior providers and the background service that keeps them off the allocation loop.

A :class:`PriorProvider` maps variant texts to prior CTRs in [0, 1]. The worker never
calls one directly: it hands :class:`~lola.stream.shard.PriorRequest` items to a
:class:`PriorService`, whose thread batches texts, calls ``predict`` and queues the
results. The worker drains results between batches and applies them with
``BanditState.set_prior``. A slow or failing provider therefore never stalls
decisions: a request not answered within ``timeout_s`` is given up (the arm simply
has no prior, as in plain UCB) and counted as a fallback; so is a provider error, a
result outside [0, 1], or a full queue.

:class:`OnnxModelProvider` wraps ``lola.export.serve.OnnxPriorModel(model_dir)`` (the
priors engineer's torch-free server, which checks the model card's sha256). It loads
lazily on first use and reloads, on the service thread, when the model folder changes
(the card by content, every file it lists by size, mtime and inode, so a swapped ONNX
file is noticed even with the card untouched) or on
:meth:`OnnxModelProvider.request_reload` (SIGHUP in the worker). The old model keeps
serving until the new one has loaded and passed its hash check (of the very bytes
ONNX Runtime loads), so a reload has no downtime; a failed reload keeps the old model
and is retried only after a back-off (5 s doubling to 10 min; SIGHUP retries at once),
so a bad model is not re-hashed every watch interval.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from lola.errors import ConfigError, ModelIntegrityError
from lola.export.card import ModelCard
from lola.export.digest import bytes_sha256

log = logging.getLogger("lola.stream.priors")


@runtime_checkable
class PriorProvider(Protocol):
    """Anything that predicts prior CTRs for texts."""

    def predict(self, texts: list[str]) -> np.ndarray:
        """Return float64[len(texts)] with values in [0, 1]."""
        ...


class ConstantPriorProvider:
    """The same prior CTR for every text (a baseline, and the default in tests)."""

    def __init__(self, ctr: float) -> None:
        if not (0.0 <= float(ctr) <= 1.0):
            raise ConfigError(f"constant prior must be in [0, 1], got {ctr}")
        self.ctr = float(ctr)

    def predict(self, texts: list[str]) -> np.ndarray:
        return np.full(len(texts), self.ctr, dtype=np.float64)


class OnnxModelProvider:
    """Lazy, hot-reloadable ``lola.export.serve.OnnxPriorModel`` (see module docstring)."""

    CARD = "model_card.json"
    #: Back-off after a failed load: first retry after RETRY_MIN_S, doubling to RETRY_MAX_S.
    RETRY_MIN_S = 5.0
    RETRY_MAX_S = 600.0

    def __init__(self, model_dir: str | Path, loader: Callable[[Path], Any] | None = None,
                 variant: str = "auto", device: str = "auto") -> None:
        self.model_dir = Path(model_dir)
        self.variant, self.device = variant, device  # LOLA_MODEL_VARIANT, LOLA_MODEL_DEVICE
        if not self.model_dir.is_dir():
            raise ConfigError(f"model dir not found: {self.model_dir}")
        self._loader = loader
        self._model: Any = None
        self._card_stamp: tuple | None = None
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self._reload_requested = threading.Event()
        self.reloads = 0
        self.reload_failures = 0

    def _load(self) -> Any:
        if self._loader is not None:
            return self._loader(self.model_dir)
        from lola.export.serve import OnnxPriorModel  # imports onnxruntime/tokenizers only

        # One ORT thread: the prior thread must not take the allocation loop's core.
        return OnnxPriorModel(self.model_dir, intra_op_threads=1, provider=self.device, variant=self.variant)

    def _stamp(self) -> tuple | None:
        """The card's sha256 and (size, mtime_ns, inode) of every file it lists: cheap (no
        model bytes are hashed), and changed by any replacement of a file."""
        try:
            raw = (self.model_dir / self.CARD).read_bytes()
        except OSError:
            return None
        names = ModelCard.file_names(raw)
        files = []
        for name in names:
            try:
                st = os.stat(self.model_dir / name)
                files.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
            except OSError:
                files.append((name, None, None, None))
        return (bytes_sha256(raw), tuple(files))

    def request_reload(self) -> None:
        """Ask for a reload at the next prediction (safe from a signal handler)."""
        self._reload_requested.set()

    def maybe_reload(self) -> None:
        """Reload if asked or the model folder changed; keep the old model on failure."""
        stamp = self._stamp()
        requested = self._reload_requested.is_set()
        if self._model is not None and not requested and stamp == self._card_stamp:
            return
        if not requested and time.monotonic() < self._retry_at:
            return  # backing off after a failed load
        self._reload_requested.clear()
        try:
            model = self._load()
        except Exception as exc:  # ModelIntegrityError, missing files, ORT errors
            self.reload_failures += 1
            self._backoff_s = min(max(2 * self._backoff_s, self.RETRY_MIN_S), self.RETRY_MAX_S)
            self._retry_at = time.monotonic() + self._backoff_s
            if self._model is None:
                raise
            log.error("prior model reload failed, keeping the loaded model",
                      extra={"error": str(exc), "retry_in_s": self._backoff_s})
            return
        first = self._model is None
        self._model, self._card_stamp = model, stamp
        self._backoff_s = self._retry_at = 0.0
        if not first:
            self.reloads += 1
        log.info("prior model loaded", extra={"model_dir": str(self.model_dir), "reload": not first})
        if getattr(model, "projection", True) is None:  # once per loaded model (issue 20)
            log.warning("prior model has no embedding projection (exported before it; `lola priors projection` "
                        "adds one): LLM-LinUCB arms keep hashed text features", extra={"model_dir": str(self.model_dir)})

    @property
    def model_version(self) -> str | None:
        """The loaded model's version (model card), None before the first load."""
        return getattr(self._model, "model_version", None) if self._model is not None else None

    def predict(self, texts: list[str]) -> np.ndarray:
        self.maybe_reload()
        if self._model is None:
            raise ModelIntegrityError(f"no prior model loaded from {self.model_dir} (retrying after a back-off)")
        return np.asarray(self._model.predict(texts), dtype=np.float64)

    def predict_with_features(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """CTRs and the model's arm features (float64[n, k], None without a projection): one pass."""
        self.maybe_reload()
        if self._model is None:
            raise ModelIntegrityError(f"no prior model loaded from {self.model_dir} (retrying after a back-off)")
        with_features = getattr(self._model, "predict_with_features", None)
        if with_features is None:  # a custom loader's model
            return np.asarray(self._model.predict(texts), dtype=np.float64), None
        ctr, z = with_features(texts)
        return np.asarray(ctr, dtype=np.float64), z


@dataclass(frozen=True)
class PriorResult:
    partition: int
    experiment_id: str
    variant_id: str
    prior: float
    #: The model's projected embedding (LLM-LinUCB arm features, lola.export.projection); None
    #: when the provider gives none (no projection, a plugin, a constant prior).
    features: np.ndarray | None = None


class PriorService:
    """Runs a provider on its own thread; see the module docstring.

    ``on_fallback(reason)`` is called (from either thread) for every request that
    ends without a prior: ``timeout``, ``error``, ``out_of_range``, ``declined`` (NaN from
    the provider), ``queue_full``. ``on_latency(seconds)`` gets the duration of every provider call.
    """

    def __init__(self, provider: PriorProvider | None, timeout_s: float = 2.0, batch_size: int = 32,
                 max_pending: int = 100_000, on_fallback: Callable[[str], None] | None = None,
                 watch_interval_s: float = 5.0, on_latency: Callable[[float], None] | None = None) -> None:
        self.provider = provider
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        self.watch_interval_s = watch_interval_s
        self._in: queue.Queue = queue.Queue(maxsize=max_pending)
        self._out: queue.Queue = queue.Queue()
        self._on_fallback = on_fallback or (lambda reason: None)
        self._on_latency = on_latency or (lambda seconds: None)  # one provider call, seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready_at = 0.0
        self.delivered = 0
        self.fallbacks: dict[str, int] = {}

    def _fallback(self, reason: str, n: int = 1) -> None:
        self.fallbacks[reason] = self.fallbacks.get(reason, 0) + n
        for _ in range(n):
            self._on_fallback(reason)

    def start(self) -> "PriorService":
        if self.provider is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lola-priors", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def submit(self, request: Any) -> None:
        """Queue a PriorRequest; never blocks."""
        if self.provider is None:
            return
        try:
            self._in.put_nowait((time.monotonic(), request))
        except queue.Full:
            self._fallback("queue_full")

    def results(self) -> list[PriorResult]:
        """Priors that arrived since the last call (never blocks)."""
        out = []
        while True:
            try:
                out.append(self._out.get_nowait())
            except queue.Empty:
                return out

    def _run(self) -> None:
        # Load the model at once (still off the allocation loop), not at the first request.
        # Requests queued while it loads get their timeout counted from when it is ready,
        # so the variants of a worker's first minutes are not left without priors.
        if isinstance(self.provider, OnnxModelProvider):
            try:
                self.provider.maybe_reload()
            except Exception as exc:
                log.error("prior model load failed", extra={"error": str(exc)[:300]})
        self._ready_at = time.monotonic()
        last_watch = time.monotonic()
        while not self._stop.is_set():
            if self._serve():
                continue
            if isinstance(self.provider, OnnxModelProvider) and time.monotonic() - last_watch > self.watch_interval_s:
                last_watch = time.monotonic()
                try:
                    self.provider.maybe_reload()
                except Exception as exc:  # first load failed: report, retry later
                    log.error("prior model load failed", extra={"error": str(exc)})

    def _serve(self) -> bool:
        """Wait up to 0.1 s for a request, predict it and whatever else is queued (one batch) and
        queue the results; False if none came.

        A scope of its own so that the batch's requests are unreferenced while the thread
        waits for the next one (as loop locals they lived on: ids and texts of experiments
        perhaps already evicted, pinning heap pages; stream/memory.py)."""
        try:
            batch = [self._in.get(timeout=0.1)]
        except queue.Empty:
            return False
        while len(batch) < self.batch_size:
            try:
                batch.append(self._in.get_nowait())
            except queue.Empty:
                break
        now = time.monotonic()
        batch = [(max(t, self._ready_at) + self.timeout_s, r) for t, r in batch]
        live = [(d, r) for d, r in batch if d > now]
        if len(live) < len(batch):
            self._fallback("timeout", len(batch) - len(live))
        if not live:
            return True
        t_call = time.monotonic()
        try:
            requests = [r for _, r in live]
            # predict_requests: providers that also want ids and sibling texts (prior_plugins.py)
            predict_requests = getattr(self.provider, "predict_requests", None)
            with_features = getattr(self.provider, "predict_with_features", None)  # issue 20: arm features
            feats = None
            if predict_requests is not None:
                raw = predict_requests(requests)
            elif with_features is not None:
                raw, feats = with_features([r.text for r in requests])
            else:
                raw = self.provider.predict([r.text for r in requests])
            preds = np.asarray(raw, dtype=np.float64)
            if preds.shape != (len(live),):
                raise ValueError(f"provider returned shape {preds.shape}, expected ({len(live)},)")
            feats = _checked_features(feats, len(live))
        except Exception as exc:  # a failing model must never take the worker down
            self._on_latency(time.monotonic() - t_call)
            log.error("prior provider failed", extra={"error": str(exc)[:300]})
            self._fallback("error", len(live))
            return True
        done = time.monotonic()
        self._on_latency(done - t_call)
        for i, ((deadline, req), p) in enumerate(zip(live, preds.tolist())):
            if done > deadline:
                self._fallback("timeout")
            elif p != p:  # NaN: the provider declined this one
                self._fallback("declined")
            elif not (0.0 <= p <= 1.0):
                self._fallback("out_of_range")
            else:
                self.delivered += 1
                self._out.put(PriorResult(req.partition, req.experiment_id, req.variant_id, p,
                                          None if feats is None else feats[i]))
        return True


def _checked_features(feats: Any, n: int) -> np.ndarray | None:
    """The provider's arm features as float64[n, k] (1 <= k <= 64, finite); anything else is
    logged and dropped (the priors still apply, the arms keep hashed text features)."""
    if feats is None:
        return None
    z = np.asarray(feats, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] != n or not 1 <= z.shape[1] <= 64 or not np.isfinite(z).all():
        log.error("prior provider returned unusable arm features; dropped", extra={"shape": list(z.shape)})
        return None
    return z
