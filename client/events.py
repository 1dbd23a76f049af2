"""Typed event builders: the worker's own event classes, encoded and checked by its decoder.

Each builder returns a frozen event model (msgspec Struct) of :mod:`lola.stream.events`; :func:`encode`
turns one into the ``(key, value)`` Kafka record the worker expects and runs the
worker's :func:`~lola.stream.events.decode` on it, so an event the worker would
dead-letter raises :class:`~lola.errors.EventError` here instead (one definition of
an event's rules).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from lola.stream import events as ev


def _now(ts: float | None) -> float:
    return time.time() if ts is None else ts


def _new_id() -> str:
    return uuid.uuid4().hex


def variant(experiment_id: str, variant_id: str, text: str, action: str = "add",
            settings: dict[str, Any] | None = None) -> ev.Variant:
    """Add (or ``action="retire"``) a variant; ``settings`` configure a new experiment."""
    return ev.Variant(experiment_id, variant_id, text, action, settings)


def decision_request(request_id: str, experiment_id: str, user_id: str | None = None,
                     context: dict[str, Any] | None = None, ts: float | None = None) -> ev.DecisionRequest:
    """Ask for a decision; the answer on the decisions topic carries ``request_id``."""
    return ev.DecisionRequest(request_id, experiment_id, user_id, context, ts)


def impression(experiment_id: str, variant_id: str, event_id: str | None = None, ts: float | None = None,
               request_id: str | None = None) -> ev.Impression:
    """A served variant; ``event_id`` (default: a fresh uuid) de-duplicates retries."""
    return ev.Impression(event_id or _new_id(), experiment_id, variant_id, _now(ts), request_id)


def click(experiment_id: str, variant_id: str, event_id: str | None = None, ts: float | None = None,
          impression_id: str | None = None, request_id: str | None = None) -> ev.Click:
    return ev.Click(event_id or _new_id(), experiment_id, variant_id, _now(ts), impression_id, request_id)


def conversion(experiment_id: str, variant_id: str, value: float = 1.0, event_id: str | None = None,
               ts: float | None = None) -> ev.Conversion:
    return ev.Conversion(event_id or _new_id(), experiment_id, variant_id, value, _now(ts))


def encode(event: ev.Event, max_bytes: int = 65_536) -> tuple[bytes, bytes]:
    """``(key, value)`` of one event; raises EventError where the worker would dead-letter it."""
    if not isinstance(event, ev.INPUTS):
        raise TypeError(f"not a lola input event: {type(event).__name__}")
    key = event.experiment_id.encode()
    value = ev.encode_event(event)  # the models' own encoder: type tag and schema version included
    ev.decode(value, key, max_bytes)
    return key, value
