"""``lola serve``'s HTTP API (FastAPI on uvicorn), embedding an edge allocator.

Endpoints (every one but the probes and the API page needs ``X-API-Key``):

* ``POST /rank {experiment_id, context?}`` -> ``{variant_id, propensity, event_id,
  policy_version, fallback}``: one edge decision (logged on the decisions topic);
* ``POST /impression {event_id}``: the variant was displayed (the impression the worker
  counts); idempotent;
* ``POST /reward {event_id, kind: click|conversion, value}``: a click (value 1) or a
  conversion (0 < value <= 1e9) for an event id this process issued; one of each per
  event id (a repeat answers ``duplicate: true`` and sends nothing); an impression not
  yet confirmed is sent first (a click implies the display);
* ``GET /healthz`` (alive), ``GET /readyz`` (snapshots read once), ``GET /metrics``
  (Prometheus), ``GET /docs`` and ``/openapi.json`` (the API page).

Limits: a token bucket per API key (``LOLA_SERVE_RATE_PER_S``, ``LOLA_SERVE_RATE_BURST``:
429 above), the last ``LOLA_SERVE_ISSUED_MAX`` event ids remembered (a reward for an
older one is refused with 404), ids of at most 256 characters, bodies validated by their
models (422 with the reason).
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import OrderedDict
from typing import Any, Literal, Protocol

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field

from lola.client.edge import Decision, NotServable
from lola.stream.events import MAX_CONVERSION_VALUE, MAX_ID_CHARS


class Allocator(Protocol):
    """What the API needs of :class:`lola.client.EdgeAllocator`."""

    fallbacks: int
    waiting_for_topic: bool  # the snapshots topic does not exist yet (reported by /readyz)

    def decide(self, experiment_id: str, context: dict[str, Any] | None = None) -> Decision: ...
    def impression(self, d: Decision) -> None: ...
    def click(self, d: Decision) -> None: ...
    def conversion(self, d: Decision, value: float) -> None: ...
    def ready(self) -> bool: ...


Id = Field(min_length=1, max_length=MAX_ID_CHARS)


class RankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    experiment_id: str = Id
    context: dict[str, Any] | None = None


class RankResponse(BaseModel):
    variant_id: str
    propensity: float
    event_id: str
    policy_version: int
    fallback: bool


class ImpressionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: str = Id


class RewardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: str = Id
    kind: Literal["click", "conversion"] = "click"
    value: float = Field(1.0, gt=0.0, le=MAX_CONVERSION_VALUE, allow_inf_nan=False)


class Ack(BaseModel):
    event_id: str
    duplicate: bool


class TokenBucket:
    """Requests per second per key. Hand-written: a dozen lines, where the rate-limit
    libraries for Starlette bring storage back ends this single process does not need."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = float(rate), float(burst)
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            ok = tokens >= 1.0
            self._state[key] = (tokens - 1.0 if ok else tokens, now)
            return ok


class Issued:
    """The event ids this process issued (bounded, oldest forgotten first) and what each has had sent."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._map: OrderedDict[str, list] = OrderedDict()  # event_id -> [decision, set of sent kinds]
        self._lock = threading.Lock()

    def add(self, d: Decision) -> None:
        with self._lock:
            self._map[d.request_id] = [d, set()]
            while len(self._map) > self.size:
                self._map.popitem(last=False)

    def claim(self, event_id: str, kind: str) -> tuple[Decision | None, bool, bool]:
        """(decision or None if not issued here, first time of ``kind``, impression already sent)."""
        with self._lock:
            entry = self._map.get(event_id)
            if entry is None:
                return None, False, False
            sent = entry[1]
            first = kind not in sent
            had_impression = "impression" in sent
            sent.add(kind)
            if kind != "impression":
                sent.add("impression")
            return entry[0], first, had_impression


def create_app(allocator: Allocator, api_keys: list[str], rate_per_s: float = 10_000.0, burst: int = 2_000,
               issued_max: int = 1_000_000) -> FastAPI:
    """The API over ``allocator`` (an :class:`~lola.client.EdgeAllocator`, or any object with its methods)."""
    if not api_keys or any(not k for k in api_keys):
        raise ValueError("lola serve needs at least one non-empty API key")
    keys = [k.encode() for k in api_keys]
    bucket = TokenBucket(rate_per_s, burst)
    issued = Issued(issued_max)
    registry = CollectorRegistry()
    requests = Counter("lola_serve_requests", "HTTP API requests by endpoint and status", ["endpoint", "status"],
                       registry=registry)
    fallbacks = Counter("lola_serve_fallback_decisions", "decisions served from the safe split (past the horizon)",
                        registry=registry)
    latency = Histogram("lola_serve_rank_seconds", "time inside /rank (decision and logging)", registry=registry,
                        buckets=(5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2))
    app = FastAPI(title="lola serve", version="1",
                  description="Edge decisions from lola-stream's policy snapshots, and their rewards (docs/serving.md).")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the reason without the input: a NaN or a huge body is never echoed back
        requests.labels(request.url.path.strip("/") or "root", "422").inc()
        return JSONResponse({"detail": [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]},
                            status_code=422)

    async def authorized(x_api_key: str | None = Header(None, description="one of LOLA_SERVE_API_KEYS")) -> str:
        given = (x_api_key or "").encode()
        if not any(hmac.compare_digest(given, k) for k in keys):
            raise HTTPException(401, "missing or unknown X-API-Key")
        if not bucket.allow(x_api_key or ""):
            raise HTTPException(429, "rate limit exceeded (LOLA_SERVE_RATE_PER_S)")
        return x_api_key or ""

    def refuse(endpoint: str, status: int, detail: str) -> HTTPException:
        requests.labels(endpoint, str(status)).inc()
        return HTTPException(status, detail)

    @app.post("/rank", response_model=RankResponse)
    async def rank(body: RankRequest, _key: str = Depends(authorized)) -> Response:
        t0 = time.perf_counter()
        try:
            d = allocator.decide(body.experiment_id, body.context)
        except NotServable as exc:
            raise refuse("rank", 404, str(exc)) from None
        issued.add(d)
        if d.fallback:
            fallbacks.inc()
        latency.observe(time.perf_counter() - t0)
        requests.labels("rank", "200").inc()
        # serialised here (response_model documents it): FastAPI's re-validation of the model costs more
        # than the decision on this hot path
        return Response(orjson.dumps({"variant_id": d.variant_id, "propensity": d.propensity, "event_id": d.request_id,
                                      "policy_version": d.policy_version, "fallback": d.fallback}),
                        media_type="application/json")

    @app.post("/impression", response_model=Ack)
    async def impression(body: ImpressionRequest, _key: str = Depends(authorized)) -> Ack:
        d, first, _ = issued.claim(body.event_id, "impression")
        if d is None:
            raise refuse("impression", 404, "event_id was not issued by this server (or is too old)")
        if first:
            allocator.impression(d)
        requests.labels("impression", "200").inc()
        return Ack(event_id=body.event_id, duplicate=not first)

    @app.post("/reward", response_model=Ack)
    async def reward(body: RewardRequest, _key: str = Depends(authorized)) -> Ack:
        if body.kind == "click" and body.value != 1.0:
            raise refuse("reward", 422, "a click's value is 1")
        d, first, had_impression = issued.claim(body.event_id, body.kind)
        if d is None:
            raise refuse("reward", 404, "event_id was not issued by this server (or is too old)")
        if first:
            if not had_impression:
                allocator.impression(d)  # a click or conversion implies the display
            if body.kind == "click":
                allocator.click(d)
            else:
                allocator.conversion(d, body.value)
        requests.labels("reward", "200").inc()
        return Ack(event_id=body.event_id, duplicate=not first)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(response: Response) -> dict[str, str]:
        if not allocator.ready():
            response.status_code = 503
            return {"status": "snapshots topic does not exist yet" if allocator.waiting_for_topic
                    else "snapshots not read yet"}
        return {"status": "ready"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
