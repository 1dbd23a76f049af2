"""Event models (schema version 1): the one definition of every message the worker reads and writes.

Pure module: no confluent_kafka, no I/O. Every input arrives on ONE topic
(``lola.events``), keyed by ``experiment_id``, and carries a ``type``. The msgspec
Structs below are the schema: :func:`decode` validates with them, :func:`encode_decision`
writes with them, :func:`json_schemas` turns them into the JSON Schema files shipped in
``stream/schemas/`` (``lola schema``), and :func:`markdown_tables` into the tables of
docs/events.md. A bad message raises :class:`~lola.errors.EventError` with a short
machine-readable ``reason`` (see :data:`REASONS`), which the worker puts in the dead
letter's ``lola.reason`` header.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import msgspec
import orjson
from msgspec import Meta, Struct

from lola.errors import EventError
from lola.kernels.policy_table import ALL_SETTINGS, POLICIES, SETTINGS
from lola.stream.warm_start import WARM_START_NAME

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
#: A variant's settings: the stream's own attribution window, then every kernel setting
#: of the one policy table (lola.kernels.policy_table, docs/policies.md).
_KERNEL_SETTINGS = frozenset(ALL_SETTINGS)
_STRING_SETTINGS = frozenset(["policy"] + [n for n, s in SETTINGS.items() if s.kind == "string"])

#: Dead-letter reasons, with what each means.
REASONS = {
    "oversized": "message larger than max_message_bytes",
    "invalid_json": "not UTF-8 JSON (after stripping a Schema Registry header, if any)",
    "not_an_object": "JSON value is not an object",
    "unsupported_version": "field v is not a supported schema version",
    "unknown_type": "field type is missing or not an input event type",
    "missing_field": "a required field is absent",
    "wrong_type": "a field has the wrong JSON type",
    "invalid_value": "a field is out of range (negative, non-finite, above its bound, empty, too long)",
    "future_ts": "ts further in the future than max_future_skew_s (milliseconds sent as seconds?)",
    "key_mismatch": "the Kafka key differs from experiment_id (breaks partition ownership)",
    "unknown_experiment": "event for an experiment no variant event created",
    "unknown_variant": "event for a variant the experiment does not have",
    "invalid_settings": "unknown setting, one the policy does not read, or out of its bounds (docs/policies.md)",
    "late_click": "click outside the attribution window",
    "late_conversion": "conversion outside the attribution window",
    "no_active_variant": "decision request for an experiment with no active variant (all pending, blocked or retired)",
    "experiment_archived": "decision request for an archived experiment (events for it are ignored until eviction)",
    "noncompliant": "the variant gate blocked the variant (reason in lola.detail); it is never served",
    "stale": "event ts at or below the de-duplication horizon: it cannot be checked for duplicates, so it is not counted",
    "duplicate": "a sample (1 in duplicate_dead_letter_every) of the duplicates dropped; all are counted in a metric",
    "click_cap": "more clicks naming one impression than max_clicks_per_impression",
    "invalid_transition": "a lifecycle action the experiment's or variant's state does not allow (archived is final)",
    "capacity": "a limit was reached: experiments per partition, arms per experiment (docs/operations/limits.md)",
    "bad_context": "a contextual experiment's request context has a wrong type, NaN/inf, or too many fields "
                   "(docs/contextual.md; the dead letter keeps field names only)",
    "processing_error": "applying the event raised an unexpected error (class in lola.detail); shard rolled back",
    "poison": "the process died N times with this record in flight (crash-loop breaker)",
}


# --- the event models: the one definition ---------------------------------------------
# msgspec Structs, chosen by measured decode speed (docs/events.md): one typed decode per
# message validates types, lengths and bounds in C. JSON Schema files come from the same
# classes (:func:`json_schemas`), so the schema and the decoder cannot drift apart.

Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS)]
Ts = Annotated[float, Meta(ge=0.0, le=MAX_TS, description="seconds since the Unix epoch")]
Version = Literal[1]


class _Event(Struct, frozen=True, gc=False, tag_field="type"):
    pass


class Variant(_Event, tag="variant"):
    """Adds (or retires) a variant; the first add creates the experiment with its settings."""

    experiment_id: Id
    variant_id: Id
    text: Annotated[str, Meta(max_length=MAX_TEXT_CHARS)]
    action: Literal["add", "retire"] = "add"
    settings: dict[str, Any] | None = None
    v: Version = SCHEMA_VERSION


#: Experiment lifecycle actions (docs/operations/lifecycle.md).
ACTIONS = ("create", "update", "pause", "resume", "stop", "archive")
#: Experiment status in snapshots, and variant states (arm ``state``).
STATUSES = ("running", "paused", "stopped", "archived")
VARIANT_STATES = ("pending", "active", "blocked", "retired")


class ExperimentEvent(_Event, tag="experiment"):
    """Lifecycle of an experiment: create (with settings), update, pause, resume, stop, archive."""

    experiment_id: Id
    action: Literal["create", "update", "pause", "resume", "stop", "archive"]
    settings: dict[str, Any] | None = None
    reason: Annotated[str, Meta(max_length=MAX_ID_CHARS)] | None = None
    v: Version = SCHEMA_VERSION


class DecisionRequest(_Event, tag="decision_request"):
    """Asks for a variant; answered on the decisions topic."""

    request_id: Id
    experiment_id: Id
    user_id: Id | None = None
    context: dict[str, Any] | None = None
    ts: Ts | None = None
    v: Version = SCHEMA_VERSION


class _Outcome(_Event):
    """Fields every impression, click and conversion carries (in this order: positional construction)."""

    event_id: Id
    experiment_id: Id
    variant_id: Id


class _Feedback(_Outcome):
    """An impression or a click: the outcome's fields, then its time."""

    ts: Ts


class Impression(_Feedback, tag="impression"):
    """A variant was shown."""

    request_id: Id | None = None
    v: Version = SCHEMA_VERSION


class Click(_Feedback, tag="click"):
    """A shown variant was clicked (attributed by impression_id, request_id, or the window)."""

    impression_id: Id | None = None
    request_id: Id | None = None
    v: Version = SCHEMA_VERSION


class Conversion(_Outcome, tag="conversion"):
    """A conversion worth ``value`` after a variant was shown."""

    value: Annotated[float, Meta(ge=0.0, le=MAX_CONVERSION_VALUE)]
    ts: Ts
    impression_id: Id | None = None  # attributed like a click's (issue 20)
    request_id: Id | None = None
    v: Version = SCHEMA_VERSION


class Decision(_Event, tag="decision"):
    """Output: the worker's answer to a decision_request (key: experiment_id)."""

    request_id: Id
    experiment_id: Id
    variant_id: Id
    propensity: Annotated[float, Meta(ge=0.0, le=1.0)]
    policy: str
    policy_version: Annotated[int, Meta(ge=0)]
    ts: Ts
    v: Version = SCHEMA_VERSION


#: A kernel number that may be infinite: JSON has no infinity, so it is written as a string.
Extended = float | Literal["inf", "-inf"] | None


#: How much of a variant's text a snapshot repeats (snapshots stay far below max_message_bytes).
SNAPSHOT_TEXT_CHARS = 300


class SnapshotArm(Struct, frozen=True):
    """One variant in a policy snapshot."""

    impressions: Annotated[float, Meta(ge=0.0)]
    clicks: Annotated[float, Meta(ge=0.0)]
    conversions: Annotated[float, Meta(ge=0.0)]
    prior: float | None  # the prior CTR (null: none yet)
    score: Extended  # the policy's current index (TS: one posterior draw); null if none
    serving_share: Annotated[float, Meta(ge=0.0, le=1.0)]  # the decisions' allocation
    active: bool  # served now (state active and, for a stopped experiment, the best arm)
    state: Literal["pending", "active", "blocked", "retired"] = "active"
    state_reason: str | None = None
    #: the variant's text, cut to SNAPSHOT_TEXT_CHARS (lola variants generate --from-experiment reads it)
    text: Annotated[str, Meta(max_length=SNAPSHOT_TEXT_CHARS)] | None = None


class SnapshotOpe(Struct, frozen=True):
    """Off-policy evaluation: whether every arm has a positive propensity after burn-in."""

    needs_floor: bool
    min_traffic: Annotated[float, Meta(ge=0.0)]
    supported: bool


class SnapshotBai(Struct, frozen=True):
    """Best-arm identification (Algorithm 2): stop flag, good set and answer now (variant ids)."""

    done: bool
    good_set: list[Id]
    recommendation: list[Id]


class SnapshotPosterior(Struct, frozen=True):
    """A Beta posterior of an arm's CTR (alpha, beta null: a point mass at the prior, n_aux = inf)."""

    alpha: float | None
    beta: float | None
    mean: Annotated[float, Meta(ge=0.0, le=1.0)]
    ci: Annotated[list[Annotated[float, Meta(ge=0.0, le=1.0)]], Meta(min_length=2, max_length=2)]


class SnapshotArmStats(Struct, frozen=True):
    """One variant's statistics (lola.stream.stats): posteriors, P(best), expected loss, prior share."""

    posterior: SnapshotPosterior
    posterior_with_prior: SnapshotPosterior
    p_best: Annotated[float, Meta(ge=0.0, le=1.0)]
    p_best_with_prior: Annotated[float, Meta(ge=0.0, le=1.0)]
    expected_loss: float | None  # null for a retired variant
    expected_loss_with_prior: float | None
    prior_share: Annotated[float, Meta(ge=0.0, le=1.0)]


class SnapshotStats(Struct, frozen=True):
    """Per-experiment statistics, as of ``as_of_version`` (recomputed on change at a capped cadence)."""

    as_of_version: Annotated[int, Meta(ge=0)]
    computed_at: Ts
    ci_level: Annotated[float, Meta(gt=0.0, lt=1.0)]
    arms: dict[Id, SnapshotArmStats]


class SnapshotWinner(Struct, frozen=True):
    """The declared winner, the rule that declared it and when (lola.stream.stats)."""

    variant_id: Id
    rule: Literal["p_best_and_expected_loss", "bai"]
    p_best: Annotated[float, Meta(ge=0.0, le=1.0)]
    expected_loss: float | None
    ts: Ts
    policy_version: Annotated[int, Meta(ge=0)]


Share = Annotated[float, Meta(ge=0.0, le=1.0)]


class SnapshotEdge(Struct, frozen=True):
    """Edge serving (lola.stream.edge): the allocation for the interval until the next snapshot."""

    method: str
    horizon_impressions: Annotated[float, Meta(ge=0.0)]
    valid_until: Ts  # after it the edge serves ``fallback`` (and counts it)
    allocation: dict[Id, Share]
    fallback: dict[Id, Share]


class PolicySnapshot(_Event, tag="policy_snapshot", omit_defaults=True):
    """Output: the state of one experiment (compacted snapshots topic, key: experiment_id).

    Written at a capped cadence (``snapshot_interval_s``); ``bai`` only for BAI policies.
    """

    v: Version
    experiment_id: Id
    policy: str
    policy_version: Annotated[int, Meta(ge=0)]
    n_aux: Extended
    ts: Ts
    partition: Annotated[int, Meta(ge=0)]
    input_offset: Annotated[int, Meta(ge=0)]
    arms: dict[Id, SnapshotArm]
    ope: SnapshotOpe
    status: Literal["running", "paused", "stopped", "archived"] | None = None  # None: a writer before issue 19
    bai: SnapshotBai | None = None
    stats: SnapshotStats | None = None
    winner: SnapshotWinner | None = None
    edge: SnapshotEdge | None = None
    #: contextual experiments only (docs/contextual.md): algorithm, featurizer version, dims,
    #: impressions trained, never_joined decisions, join-window entries and bytes (FALCON: epoch, gamma).
    contextual: dict[str, Any] | None = None


Event = Variant | ExperimentEvent | DecisionRequest | Impression | Click | Conversion
INPUTS: tuple[type, ...] = (Variant, ExperimentEvent, DecisionRequest, Impression, Click, Conversion)
OUTPUTS: tuple[type, ...] = (Decision, PolicySnapshot)
EVENT_TYPES = tuple(cls.__struct_config__.tag for cls in INPUTS)
_DECODER = msgspec.json.Decoder(Event)
_ENCODER = msgspec.json.Encoder()
#: Confluent Schema Registry wire format: magic byte 0, a 4-byte schema id, then the JSON.
#: JSON text never starts with a NUL byte, so the header is unambiguous.
_REGISTRY_MAGIC = 0
_REGISTRY_HEADER = 5


def _reason(exc: msgspec.ValidationError) -> EventError:
    """The dead-letter reason of a msgspec validation error (its messages name the path)."""
    msg = str(exc)
    path = msg.rpartition(" - at `")[2].rstrip("`") if " - at `" in msg else "$"
    if path == "$.v":
        return EventError("unsupported_version", msg[:120])
    if path == "$.type" or msg.startswith("Object missing required field `type`"):
        return EventError("unknown_type", msg[:120])
    if path == "$":
        if msg.startswith("Object missing required field"):
            return EventError("missing_field", msg[:120])
        return EventError("not_an_object", msg[:120])
    if "got `null`" in msg:
        return EventError("missing_field", msg[:120])  # a required field sent as null counts as absent
    if msg.startswith("Expected `") and ", got `" in msg:
        return EventError("wrong_type", msg[:120])
    return EventError("invalid_value", msg[:120])  # length, bound, enum (action)


def _check_settings(settings: dict[str, Any]) -> None:
    unknown = sorted(set(settings) - _KERNEL_SETTINGS - {"attribution_window_s", "warm_start", "contextual"})
    if unknown:
        raise EventError("invalid_settings", f"unknown setting(s) {', '.join(unknown)[:80]}")
    for name, value in settings.items():
        if name == "contextual":
            if not isinstance(value, dict):
                raise EventError("wrong_type", "settings.contextual must be an object (docs/contextual.md)")
        elif name == "warm_start":
            if not isinstance(value, str) or not WARM_START_NAME.match(value):
                raise EventError("invalid_settings", f"settings.warm_start must match {WARM_START_NAME.pattern}")
        elif name in _STRING_SETTINGS:
            if not isinstance(value, str):
                raise EventError("wrong_type", f"settings.{name} must be a string")
        elif value is None and name == "horizon":
            continue  # horizon null: unknown (the default)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EventError("wrong_type", f"settings.{name} must be a number")
        elif math.isnan(value) or value < 0:
            raise EventError("invalid_value", f"settings.{name} must be >= 0")
        elif name == "attribution_window_s" and not 0 < value <= MAX_ATTRIBUTION_WINDOW_S:
            raise EventError("invalid_value", f"settings.{name} must be in (0, {MAX_ATTRIBUTION_WINDOW_S:g}]")
        # every other numeric bound is ExperimentParams' (lola.kernels.policy_table): invalid_settings


def decode(raw: bytes | None, key: bytes | None = None, max_bytes: int = 65_536) -> Event:
    """Decode and validate one message value; raise EventError(reason) if it is bad.

    When ``key`` is given it must equal the UTF-8 experiment_id: a worker owns the
    experiments of its partitions only if producers key by experiment_id. A value in
    Schema Registry framing (byte 0, 4-byte schema id, JSON) is decoded without its header.
    """
    if raw is None:
        raise EventError("invalid_json", "empty message (tombstone)")
    if len(raw) > max_bytes:
        raise EventError("oversized", f"{len(raw)} bytes > {max_bytes}")
    if raw[:1] == b"\x00" and len(raw) > _REGISTRY_HEADER:
        raw = memoryview(raw)[_REGISTRY_HEADER:]
    try:
        event = _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        # Error path only: msgspec reads an out-of-range number (1e999) as inf, orjson
        # (like the JSON RFC's interoperable range) rejects it; such a value stays invalid_json.
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError as bad:
            raise EventError("invalid_json", str(bad)[:120]) from None
        raise _reason(exc) from None
    except msgspec.DecodeError as exc:
        raise EventError("invalid_json", str(exc)[:120]) from None
    if (type(event) is Variant or type(event) is ExperimentEvent) and event.settings is not None:
        _check_settings(event.settings)
    if key is not None and key != event.experiment_id.encode():
        raise EventError("key_mismatch", "message key must be the experiment_id")
    return event


def settings_schema() -> dict[str, Any]:
    """JSON Schema of a variant's ``settings``, from the one policy table."""
    props: dict[str, Any] = {"policy": {"enum": list(POLICIES)},
                             "attribution_window_s": {"type": "number", "exclusiveMinimum": 0,
                                                      "maximum": MAX_ATTRIBUTION_WINDOW_S},
                             "warm_start": {"type": "string", "pattern": WARM_START_NAME.pattern,
                                            "description": "LinUCB warm start NAME.npz in the worker's "
                                                           "warm_start_dir (lola experiments warm-start)"},
                             "contextual": {"type": "object",
                                            "description": "makes the experiment contextual: algorithm, its "
                                                           "parameters and the context featurizer (docs/contextual.md)"}}
    for name, s in SETTINGS.items():
        if s.choices:
            props[name] = {"enum": list(s.choices)}
            continue
        rule: dict[str, Any] = {"type": "integer" if s.kind == "integer" else "number"}
        rule["exclusiveMinimum" if s.lo_open else "minimum"] = s.lo
        rule["exclusiveMaximum" if s.hi_open else "maximum"] = s.hi
        if s.nullable:
            rule = {"anyOf": [rule, {"type": "null"}]}
        props[name] = {**rule, "description": s.doc}
    return {"type": "object", "properties": props, "additionalProperties": False,
            "description": "policy settings (docs/policies.md); n_aux may also be inf, which JSON cannot carry"}


def json_schemas() -> dict[str, dict[str, Any]]:
    """One JSON Schema (draft 2020-12) per event type, generated from the models above."""
    out = {}
    for cls in INPUTS + OUTPUTS:
        schema = msgspec.json.schema(cls)
        name = cls.__struct_config__.tag
        defs = schema["$defs"]
        body = defs.pop(cls.__name__)
        if defs:  # nested models (a snapshot's arms): kept under $defs, where the body's $refs point
            body["$defs"] = defs
        if cls is Variant or cls is ExperimentEvent:
            body["properties"]["settings"] = {"anyOf": [settings_schema(), {"type": "null"}]}
        out[name] = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                     "$id": f"https://lola-stream.invalid/schemas/v{SCHEMA_VERSION}/{name}.json",
                     "title": name, **body}
    return out


def markdown_tables() -> str:
    """The field and reason tables of docs/events.md (tests/stream/test_event_schema.py keeps it current)."""
    lines = ["| `type` | required | optional (default) |", "|---|---|---|"]
    for cls in INPUTS + OUTPUTS:
        info = msgspec.structs.fields(cls)
        req = ", ".join(f.name for f in info if f.required)
        opt = ", ".join(f"{f.name} ({'null' if f.default is None else f.default})" for f in info
                        if not f.required and f.name != "v")
        lines.append(f"| `{cls.__struct_config__.tag}` | {req} | {opt} |")
    lines += ["", f"Bounds: ids are strings of 1..{MAX_ID_CHARS} characters; `ts` is a number in [0, {MAX_TS:.0f}] "
              f"(seconds since the Unix epoch); `value` in [0, {MAX_CONVERSION_VALUE:g}]; `text` at most "
              f"{MAX_TEXT_CHARS} characters; `propensity` in [0, 1]; `v` is {SCHEMA_VERSION} (absent = {SCHEMA_VERSION}).",
              "", "| `policy_snapshot` part | fields |", "|---|---|"]
    for part, cls in (("`arms.<variant_id>`", SnapshotArm), ("`ope`", SnapshotOpe), ("`bai` (BAI policies only)", SnapshotBai),
                       ("`stats`", SnapshotStats), ("`stats.arms.<variant_id>`", SnapshotArmStats),
                       ("`winner` (once declared)", SnapshotWinner), ("`edge`", SnapshotEdge)):
        lines.append(f"| {part} | {', '.join(f.name for f in msgspec.structs.fields(cls))} |")
    lines += ["", "Infinite numbers (`n_aux`, `score`) are written as the strings `\"inf\"` / `\"-inf\"`.",
              "", "| dead-letter reason | meaning |", "|---|---|"]
    lines += [f"| `{name}` | {text.replace('|', '/')} |" for name, text in REASONS.items()]
    return "\n".join(lines) + "\n"


# --- outputs -----------------------------------------------------------------------------

def encode_decision(request_id: str, experiment_id: str, variant_id: str, propensity: float,
                    policy: str, policy_version: int, ts: float) -> bytes:
    """A ``decision`` record (key: experiment_id)."""
    return _ENCODER.encode(Decision(request_id, experiment_id, variant_id, propensity, policy, policy_version, ts))


def encode_snapshot(snapshot: dict[str, Any]) -> bytes:
    """A ``policy_snapshot`` record from :meth:`ShardProcessor.snapshot`'s dict, validated by its model.

    ``msgspec.convert`` checks every field against :class:`PolicySnapshot` (a few µs per
    experiment, at the capped snapshot cadence, never on the decision path).
    """
    return _ENCODER.encode(msgspec.convert(snapshot, PolicySnapshot))


def encode_event(obj: dict[str, Any] | Struct) -> bytes:
    """Encode an input event, a dict or one of the models (load generator, tests)."""
    return _ENCODER.encode(obj) if isinstance(obj, Struct) else orjson.dumps(obj)
