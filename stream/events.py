"""Event schemas (version 1): decode and validate with orjson, encode outputs.

Pure module: no confluent_kafka, no I/O. Every input arrives on ONE topic
(``lola.events``), keyed by ``experiment_id``, and carries a ``type``:

========================  ===========================================================
type                      fields (``?`` = optional)
========================  ===========================================================
``variant``               experiment_id, variant_id, text, action? (add|retire),
                          settings? {policy, alpha, n_aux, conversion_weight, gamma,
                          attribution_window_s, eb_strength, bai_radius,
                          bai_epsilon, bai_gamma, bai_delta, min_traffic, burn_in,
                          horizon, explore_fraction, ts_alpha0, ts_beta0}
``decision_request``      request_id, experiment_id, user_id?, context? (object), ts?
``impression``            event_id, experiment_id, variant_id, ts, request_id?
``click``                 event_id, experiment_id, variant_id, ts, impression_id?,
                          request_id?
``conversion``            event_id, experiment_id, variant_id, value (0..1e9), ts,
                          impression_id?, request_id? (attributed like clicks)
========================  ===========================================================

Every event may carry ``"v": 1`` (the schema version; absent means 1). ``ts`` is
seconds since the Unix epoch (float), at most :data:`MAX_TS`; the worker also rejects
one too far in the future (``future_ts``). Ids are non-empty strings of at most
:data:`MAX_ID_CHARS` characters. A bad message raises :class:`~lola.errors.EventError`
with a short machine-readable ``reason`` (see :data:`REASONS`), which the worker puts
in the dead letter's ``lola.reason`` header.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from lola.errors import EventError

SCHEMA_VERSION = 1
MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 10_000
#: Largest conversion ``value`` (docs/operations/limits.md): far above any order value,
#: far below what could overflow the kernels' statistics (kernels.api.MAX_UPDATE_VALUE).
MAX_CONVERSION_VALUE = 1e9
#: Largest ``ts`` accepted by decoding (the year 9999). The worker also rejects a ts
#: more than ``max_future_skew_s`` ahead of its clock (``future_ts``); old ts are legal.
MAX_TS = 253_402_300_799.0
#: Bounds of the numeric variant settings that are not ExperimentParams fields.
MAX_ATTRIBUTION_WINDOW_S = 1e9
EVENT_TYPES = ("variant", "decision_request", "impression", "click", "conversion")
VARIANT_SETTINGS = ("policy", "alpha", "n_aux", "conversion_weight", "gamma", "attribution_window_s",
                    "eb_strength", "bai_radius", "bai_epsilon", "bai_gamma", "bai_delta",
                    # #20: the floor (needed for off-policy evaluation), burn-in, E&C's horizon, TS's prior
                    "min_traffic", "burn_in", "horizon", "explore_fraction", "ts_alpha0", "ts_beta0")
_STRING_SETTINGS = ("policy", "bai_radius")

#: Dead-letter reasons, with what each means.
REASONS = {
    "oversized": "message larger than max_message_bytes",
    "invalid_json": "not UTF-8 JSON",
    "not_an_object": "JSON value is not an object",
    "unsupported_version": "field v is not a supported schema version",
    "unknown_type": "field type is missing or not one of EVENT_TYPES",
    "missing_field": "a required field is absent",
    "wrong_type": "a field has the wrong JSON type",
    "invalid_value": "a field is out of range (negative, non-finite, above its bound, empty, too long)",
    "future_ts": "ts further in the future than max_future_skew_s (milliseconds sent as seconds?)",
    "key_mismatch": "the Kafka key differs from experiment_id (breaks partition ownership)",
    "unknown_experiment": "event for an experiment no variant event created",
    "unknown_variant": "event for a variant the experiment does not have",
    "invalid_settings": "experiment settings rejected by ExperimentParams",
    "late_click": "click outside the attribution window",
    "late_conversion": "conversion outside the attribution window",
    "no_active_variant": "decision request for an experiment whose variants are all retired",
    "capacity": "state cannot hold another experiment or arm",
    "processing_error": "applying the event raised an unexpected error (class in lola.detail); shard rolled back",
    "poison": "the process died N times with this record in flight (crash-loop breaker)",
}


@dataclass(frozen=True, slots=True)
class Variant:
    experiment_id: str
    variant_id: str
    text: str
    action: str
    settings: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    request_id: str
    experiment_id: str
    user_id: str | None
    context: dict[str, Any] | None
    ts: float | None


@dataclass(frozen=True, slots=True)
class Impression:
    event_id: str
    experiment_id: str
    variant_id: str
    ts: float
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Click:
    event_id: str
    experiment_id: str
    variant_id: str
    ts: float
    impression_id: str | None
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Conversion:
    event_id: str
    experiment_id: str
    variant_id: str
    value: float
    ts: float
    impression_id: str | None = None
    request_id: str | None = None


Event = Variant | DecisionRequest | Impression | Click | Conversion


def _id(obj: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise EventError("missing_field", name)
        return None
    if not isinstance(value, str):
        raise EventError("wrong_type", f"{name} must be a string")
    if not value or len(value) > MAX_ID_CHARS:
        raise EventError("invalid_value", f"{name} must have 1..{MAX_ID_CHARS} characters")
    return value


def _number(obj: dict[str, Any], name: str, required: bool = True, limit: float = MAX_TS) -> float | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise EventError("missing_field", name)
        return None
    # bool is an int subclass in Python; JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EventError("wrong_type", f"{name} must be a number")
    value = float(value)
    if not 0.0 <= value <= limit:  # False for NaN and inf too
        raise EventError("invalid_value", f"{name} must be in [0, {limit:g}]")
    return value


def decode(raw: bytes | None, key: bytes | None = None, max_bytes: int = 65_536) -> Event:
    """Decode and validate one message value; raise EventError(reason) if it is bad.

    When ``key`` is given it must equal the UTF-8 experiment_id: a worker owns the
    experiments of its partitions only if producers key by experiment_id.
    """
    if raw is None:
        raise EventError("invalid_json", "empty message (tombstone)")
    if len(raw) > max_bytes:
        raise EventError("oversized", f"{len(raw)} bytes > {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventError("invalid_json", str(exc)[:120]) from None
    if type(obj) is not dict:
        raise EventError("not_an_object", type(obj).__name__)
    # Fast path for the hot event types when every field is well formed; anything
    # unusual falls through to the full validation below, which names the reason.
    kind = obj.get("type")
    if kind == "impression" or kind == "click":
        eid = obj.get("event_id")
        exp = obj.get("experiment_id")
        vid = obj.get("variant_id")
        ts = obj.get("ts")
        if (type(eid) is str and type(exp) is str and type(vid) is str and (type(ts) is float or type(ts) is int)
                and 0.0 <= ts <= MAX_TS and 0 < len(eid) <= MAX_ID_CHARS and 0 < len(exp) <= MAX_ID_CHARS
                and 0 < len(vid) <= MAX_ID_CHARS and obj.get("v", 1) == 1 and type(obj.get("v", 1)) is int
                and (key is None or key == exp.encode())):
            rid = obj.get("request_id")
            if rid is None or (type(rid) is str and 0 < len(rid) <= MAX_ID_CHARS):
                if kind == "impression":
                    return Impression(eid, exp, vid, float(ts), rid)
                imp = obj.get("impression_id")
                if imp is None or (type(imp) is str and 0 < len(imp) <= MAX_ID_CHARS):
                    return Click(eid, exp, vid, float(ts), imp, rid)
    elif kind == "decision_request":
        rid = obj.get("request_id")
        exp = obj.get("experiment_id")
        uid = obj.get("user_id")
        ts = obj.get("ts")
        context = obj.get("context")
        if (type(rid) is str and type(exp) is str and 0 < len(rid) <= MAX_ID_CHARS and 0 < len(exp) <= MAX_ID_CHARS
                and (uid is None or (type(uid) is str and 0 < len(uid) <= MAX_ID_CHARS))
                and (ts is None or ((type(ts) is float or type(ts) is int) and 0.0 <= ts <= MAX_TS))
                and (context is None or type(context) is dict)
                and obj.get("v", 1) == 1 and type(obj.get("v", 1)) is int
                and (key is None or key == exp.encode())):
            return DecisionRequest(rid, exp, uid, context, None if ts is None else float(ts))
    return _decode_checked(obj, key)


def _decode_checked(obj: dict[str, Any], key: bytes | None) -> Event:
    version = obj.get("v", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise EventError("unsupported_version", repr(version)[:40])
    kind = obj.get("type")
    experiment_id = _id(obj, "experiment_id") if kind in EVENT_TYPES else None
    if kind == "impression":
        event: Event = Impression(_id(obj, "event_id"), experiment_id, _id(obj, "variant_id"),
                                  _number(obj, "ts"), _id(obj, "request_id", False))
    elif kind == "click":
        event = Click(_id(obj, "event_id"), experiment_id, _id(obj, "variant_id"), _number(obj, "ts"),
                      _id(obj, "impression_id", False), _id(obj, "request_id", False))
    elif kind == "decision_request":
        context = obj.get("context")
        if context is not None and not isinstance(context, dict):
            raise EventError("wrong_type", "context must be an object")
        event = DecisionRequest(_id(obj, "request_id"), experiment_id, _id(obj, "user_id", False), context,
                                _number(obj, "ts", False))
    elif kind == "conversion":
        event = Conversion(_id(obj, "event_id"), experiment_id, _id(obj, "variant_id"), _number(obj, "value", limit=MAX_CONVERSION_VALUE),
                           _number(obj, "ts"), _id(obj, "impression_id", False), _id(obj, "request_id", False))
    elif kind == "variant":
        text = obj.get("text")
        if text is None:
            raise EventError("missing_field", "text")
        if not isinstance(text, str):
            raise EventError("wrong_type", "text must be a string")
        if len(text) > MAX_TEXT_CHARS:
            raise EventError("invalid_value", f"text longer than {MAX_TEXT_CHARS} characters")
        action = obj.get("action", "add")
        if action not in ("add", "retire"):
            raise EventError("invalid_value", "action must be add or retire")
        settings = obj.get("settings")
        if settings is not None:
            if not isinstance(settings, dict):
                raise EventError("wrong_type", "settings must be an object")
            unknown = sorted(set(settings) - set(VARIANT_SETTINGS))
            if unknown:
                raise EventError("invalid_settings", f"unknown setting(s) {', '.join(unknown)[:80]}")
            for name, value in settings.items():
                if name in _STRING_SETTINGS:
                    if not isinstance(value, str):
                        raise EventError("wrong_type", f"settings.{name} must be a string")
                elif isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise EventError("wrong_type", f"settings.{name} must be a number")
                elif math.isnan(value) or value < 0:
                    raise EventError("invalid_value", f"settings.{name} must be >= 0")
                elif name == "attribution_window_s" and not 0 < value <= MAX_ATTRIBUTION_WINDOW_S:
                    raise EventError("invalid_value", f"settings.{name} must be in (0, {MAX_ATTRIBUTION_WINDOW_S:g}]")
                # every other numeric bound is ExperimentParams' (lola.kernels.params): invalid_settings
        event = Variant(experiment_id, _id(obj, "variant_id"), text, action, settings)
    else:
        raise EventError("unknown_type", repr(kind)[:40])
    if key is not None and key != experiment_id.encode():
        raise EventError("key_mismatch", "message key must be the experiment_id")
    return event


# --- outputs -----------------------------------------------------------------------------

def encode_decision(request_id: str, experiment_id: str, variant_id: str, propensity: float,
                    policy: str, policy_version: int, ts: float) -> bytes:
    """A ``decision`` record (key: experiment_id)."""
    return orjson.dumps({"v": SCHEMA_VERSION, "type": "decision", "request_id": request_id,
                         "experiment_id": experiment_id, "variant_id": variant_id,
                         "propensity": propensity, "policy": policy,
                         "policy_version": policy_version, "ts": ts})


def encode_event(obj: dict[str, Any]) -> bytes:
    """Encode an input event (used by the load generator and tests)."""
    return orjson.dumps(obj)
