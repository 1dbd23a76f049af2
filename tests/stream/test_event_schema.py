"""Contract tests: the event models, the shipped JSON Schema files, docs/events.md and the decoder agree."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator

from lola.errors import EventError
from lola.stream import events as ev
from lola.stream.processor import ShardProcessor

from test_events import BAD_INPUTS, hostile  # rootdir-relative, like kernels_twin

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ev.json_schemas()
VALIDATORS = {name: Draft202012Validator(schema) for name, schema in SCHEMAS.items()}
INPUT_TYPES = {cls.__struct_config__.tag for cls in ev.INPUTS}
#: Reasons a JSON Schema can express (the rest need the Kafka key, the clock, the state or size).
SCHEMA_REASONS = {"not_an_object", "unsupported_version", "unknown_type", "missing_field", "wrong_type",
                  "invalid_value"}


def schema_accepts(obj) -> bool:
    """Whether some input event schema accepts ``obj`` (the topic carries a union of them)."""
    return any(VALIDATORS[t].is_valid(obj) for t in INPUT_TYPES)


def test_schemas_are_draft_2020_12_and_the_shipped_files_are_current():
    for name, schema in SCHEMAS.items():
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        shipped = json.loads((ROOT / "stream" / "schemas" / f"{name}.json").read_text())
        assert shipped == schema, f"regenerate: lola schema --out stream/schemas ({name}.json)"
    assert sorted(p.stem for p in (ROOT / "stream" / "schemas").glob("*.json")) == sorted(SCHEMAS)


def test_docs_tables_are_current():
    text = (ROOT / "docs" / "events.md").read_text()
    block = re.search(r"<!-- event-tables:start -->\n(.*)<!-- event-tables:end -->", text, re.S)
    assert block and block.group(1) == ev.markdown_tables(), "regenerate docs/events.md from markdown_tables()"


def documented_examples():
    text = (ROOT / "docs" / "events.md").read_text() + (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        # one object per line; a line starting with a space continues the previous object
        for obj in re.split(r"\n(?=\{)", block.strip()):
            out.append(json.loads(obj))
    return out


EXAMPLES = documented_examples()


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["type"] for e in EXAMPLES])
def test_every_documented_example_validates_and_decodes(example):
    kind = example["type"]
    VALIDATORS[kind].validate(example)  # a KeyError: an example of a type with no model
    if kind in INPUT_TYPES:
        event = ev.decode(orjson.dumps(example), example["experiment_id"].encode())
        assert event.__struct_config__.tag == kind


def test_examples_cover_every_event_type():
    assert set(SCHEMAS) == {e["type"] for e in EXAMPLES}


@pytest.mark.parametrize("raw,reason", [(r, why) for r, why in BAD_INPUTS if why in SCHEMA_REASONS],
                         ids=[why for _, why in BAD_INPUTS if why in SCHEMA_REASONS])
def test_every_schema_expressible_reason_is_rejected_by_the_schema(raw, reason):
    assert not schema_accepts(orjson.loads(raw))


def test_settings_bounds_are_in_the_schema():
    base = {"type": "variant", "experiment_id": "e", "variant_id": "a", "text": "t"}
    assert VALIDATORS["variant"].is_valid({**base, "settings": {"policy": "bai", "bai_delta": 0.1}})
    for bad in ({"colour": 1}, {"alpha": -1}, {"bai_delta": 1.0}, {"policy": "nope"}, {"horizon": 2.5}):
        assert not VALIDATORS["variant"].is_valid({**base, "settings": bad}), bad


def test_decision_encoder_writes_what_its_schema_accepts():
    raw = ev.encode_decision("r", "e", "a", 0.5, "llm2ucb", 3, 1.7e9)
    VALIDATORS["decision"].validate(orjson.loads(raw))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile)
def test_schema_accepts_only_what_the_decoder_accepts(raw):
    """Schema-valid => decodes; decodes (no settings) => schema-valid. Settings bounds are the schema's
    and ExperimentParams' (invalid_settings after decoding), so only the first direction holds there."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    try:
        ev.decode(raw, None)
        decoded = True
    except EventError:
        decoded = False
    if schema_accepts(obj):
        assert decoded
    elif decoded:
        assert isinstance(obj, dict) and obj.get("type") == "variant" and obj.get("settings") is not None


def _snapshots():
    """Snapshots of a UCB, a floored deterministic, a TS and a BAI experiment after a few events."""
    proc = ShardProcessor(3)
    records = []
    for exp, settings in (("u", None), ("f", {"policy": "ucb", "min_traffic": 0.05}), ("t", {"policy": "ts"}),
                          ("b", {"policy": "bai"})):
        for vid in ("a", "b"):
            records.append({"type": "variant", "experiment_id": exp, "variant_id": vid, "text": f"text {vid}",
                            "settings": settings})
        records.append({"type": "impression", "experiment_id": exp, "variant_id": "a", "event_id": f"i{exp}",
                        "ts": 1.0})
    out = proc.process([(i, r["experiment_id"].encode(), orjson.dumps(r)) for i, r in enumerate(records)])
    assert not out.dead_letters
    proc.apply_prior("u", "a", 0.25)
    return [proc.snapshot(e, now=1.7e9) for e in ("u", "f", "t", "b")]


def test_snapshot_writer_encodes_through_its_model_losslessly_and_the_schema_accepts_it():
    snaps = _snapshots()
    assert "bai" in snaps[3] and "bai" not in snaps[0]
    for snap in snaps:
        raw = ev.encode_snapshot(snap)
        assert orjson.loads(raw) == orjson.loads(orjson.dumps(snap))  # the model drops or adds nothing
        VALIDATORS["policy_snapshot"].validate(orjson.loads(raw))


@pytest.mark.parametrize("path,value", [(("arms", "a", "impressions"), -1.0), (("policy_version",), -1), (("v",), 2),
                                        (("ope", "min_traffic"), "x"), (("arms", "a", "serving_share"), 1.5),
                                        (("n_aux",), "infinity")])
def test_snapshot_model_rejects_what_its_schema_rejects(path, value):
    snap = orjson.loads(orjson.dumps(_snapshots()[0]))
    target = snap
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert not VALIDATORS["policy_snapshot"].is_valid(snap)
    with pytest.raises(msgspec.ValidationError):
        ev.encode_snapshot(snap)
