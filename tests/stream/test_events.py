"""Pure tests of event decoding: every bad input gets its reason (gathered here)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lola.errors import EventError
from lola.stream import events as ev

GOOD_IMPRESSION = {"v": 1, "type": "impression", "event_id": "i1", "experiment_id": "e1", "variant_id": "a",
                   "ts": 1.5}


def test_valid_events_decode_to_their_types():
    assert ev.decode(orjson.dumps(GOOD_IMPRESSION), b"e1") == ev.Impression("i1", "e1", "a", 1.5, None)
    click = ev.decode(orjson.dumps({"type": "click", "event_id": "c", "experiment_id": "e1", "variant_id": "a",
                                    "ts": 2, "impression_id": "i1"}))
    assert click == ev.Click("c", "e1", "a", 2.0, "i1", None)
    conv = ev.decode(orjson.dumps({"type": "conversion", "event_id": "x", "experiment_id": "e", "variant_id": "a",
                                   "ts": 3, "value": 2.5}))
    assert conv.value == 2.5
    var = ev.decode(orjson.dumps({"type": "variant", "experiment_id": "e", "variant_id": "a", "text": "Hi",
                                  "settings": {"policy": "ucb", "alpha": 0.1}}))
    assert var.action == "add" and var.settings == {"policy": "ucb", "alpha": 0.1}
    req = ev.decode(orjson.dumps({"type": "decision_request", "experiment_id": "e", "request_id": "r",
                                  "context": {"geo": "US"}}))
    assert req.context == {"geo": "US"} and req.user_id is None


def _with(**changes):
    d = dict(GOOD_IMPRESSION)
    for k, v in changes.items():
        if v is _DROP:
            d.pop(k)
        else:
            d[k] = v
    return orjson.dumps(d)


_DROP = object()

BAD_INPUTS = [
    (None, "invalid_json"),
    (b"", "invalid_json"),
    (b"{nope", "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
    (b"[1, 2]", "not_an_object"),
    (b"42", "not_an_object"),
    (_with(v=2), "unsupported_version"),
    (_with(v=True), "unsupported_version"),
    (_with(type="purchase"), "unknown_type"),
    (_with(type=_DROP), "unknown_type"),
    (_with(event_id=_DROP), "missing_field"),
    (_with(variant_id=_DROP), "missing_field"),
    (_with(ts=_DROP), "missing_field"),
    (_with(experiment_id=_DROP), "missing_field"),
    (_with(ts="now"), "wrong_type"),
    (_with(ts=True), "wrong_type"),
    (_with(event_id=7), "wrong_type"),
    (_with(ts=-1.0), "invalid_value"),
    (_with(event_id=""), "invalid_value"),
    (_with(event_id="x" * 300), "invalid_value"),
    (b'{"type":"impression","event_id":"i","experiment_id":"e1","variant_id":"a","ts":1e999}', "invalid_json"),
    (orjson.dumps({"type": "conversion", "event_id": "x", "experiment_id": "e1", "variant_id": "a", "ts": 1,
                   "value": -2}), "invalid_value"),
    (orjson.dumps({"type": "variant", "experiment_id": "e1", "variant_id": "a"}), "missing_field"),
    (orjson.dumps({"type": "variant", "experiment_id": "e1", "variant_id": "a", "text": "t", "action": "drop"}),
     "invalid_value"),
    (orjson.dumps({"type": "variant", "experiment_id": "e1", "variant_id": "a", "text": "t",
                   "settings": {"colour": 1}}), "invalid_settings"),
    (orjson.dumps({"type": "variant", "experiment_id": "e1", "variant_id": "a", "text": "t",
                   "settings": {"alpha": -1}}), "invalid_value"),
    (orjson.dumps({"type": "variant", "experiment_id": "e1", "variant_id": "a", "text": "t",
                   "settings": {"bai_radius": 1}}), "wrong_type"),
    (orjson.dumps({"type": "decision_request", "experiment_id": "e1", "request_id": "r", "context": [1]}),
     "wrong_type"),
    (b"{" + b'"a":1,' * 20000 + b'"b":2}', "oversized"),
]


@pytest.mark.parametrize("raw,reason", BAD_INPUTS, ids=[r for _, r in BAD_INPUTS])
def test_bad_input_gets_its_reason(raw, reason):
    with pytest.raises(EventError) as info:
        ev.decode(raw, b"e1")
    assert info.value.reason == reason
    assert info.value.reason in ev.REASONS


def test_key_must_be_the_experiment_id():
    with pytest.raises(EventError, match="key_mismatch"):
        ev.decode(orjson.dumps(GOOD_IMPRESSION), b"other")
    with pytest.raises(EventError, match="key_mismatch"):
        ev.decode(orjson.dumps(GOOD_IMPRESSION), b"")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=12)


hostile = st.one_of(
    st.binary(max_size=200),
    json_values.map(orjson.dumps),
    st.fixed_dictionaries({"type": st.sampled_from(ev.EVENT_TYPES + ("x",))},
                          optional={k: json_values for k in ("event_id", "experiment_id", "variant_id", "ts",
                                                             "value", "text", "request_id", "action", "settings",
                                                             "v", "context")}).map(orjson.dumps),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile)
def test_decode_never_fails_other_than_event_error(raw):
    try:
        event = ev.decode(raw, None)
    except EventError as exc:
        assert exc.reason in ev.REASONS
    else:
        assert type(event) in (ev.Variant, ev.DecisionRequest, ev.Impression, ev.Click, ev.Conversion)


def test_schema_registry_framing_is_stripped():
    framed = b"\x00" + (42).to_bytes(4, "big") + orjson.dumps(GOOD_IMPRESSION)
    assert ev.decode(framed, b"e1") == ev.decode(orjson.dumps(GOOD_IMPRESSION), b"e1")
    with pytest.raises(EventError) as info:
        ev.decode(b"\x00\x00\x00\x00\x01[1]", b"e1")
    assert info.value.reason == "not_an_object"
