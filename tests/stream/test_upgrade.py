"""A checkpoint written by main before issue 19 (tests/stream/data/make_main_checkpoint.py,
committed as main_checkpoint_v1.bin) restores in this build with exact counts."""

import json
import pathlib

import orjson

from lola.stream.processor import ShardProcessor

DATA = pathlib.Path(__file__).parent / "data"


def _restored() -> tuple[ShardProcessor, dict]:
    blob = (DATA / "main_checkpoint_v1.bin").read_bytes()
    expect = json.loads((DATA / "main_checkpoint_v1.json").read_text())
    return ShardProcessor.from_checkpoint(blob), expect


def test_main_checkpoint_restores_exact_counts():
    proc, expect = _restored()
    assert proc.next_offset == expect["next_offset"]
    assert set(proc.experiments) == set(expect["experiments"])
    for exp_id, arms in expect["experiments"].items():
        snap = proc.snapshot(exp_id, now=0.0)
        assert set(snap["arms"]) == set(arms)
        for vid, want in arms.items():
            got = snap["arms"][vid]
            for k in ("impressions", "clicks", "conversions", "prior", "active"):
                assert got[k] == want[k], (exp_id, vid, k)


def test_main_checkpoint_keeps_dedup_and_counting():
    proc, expect = _restored()
    before = proc.snapshot("up-a", now=0.0)["arms"]["v0"]["impressions"]
    # i3 was an impression of up-a before the checkpoint: a re-delivery is a duplicate
    dup = orjson.dumps({"type": "impression", "event_id": "i3", "experiment_id": "up-a", "variant_id": "v1",
                        "ts": 1_700_000_003})
    new = orjson.dumps({"type": "impression", "event_id": "fresh-1", "experiment_id": "up-a", "variant_id": "v0",
                        "ts": 1_700_000_100})
    out = proc.process([(expect["next_offset"], b"up-a", dup), (expect["next_offset"] + 1, b"up-a", new)],
                       now=1_700_001_000.0)
    assert not out.dead_letters
    arms = proc.snapshot("up-a", now=0.0)["arms"]
    assert arms["v0"]["impressions"] == before + 1
    assert arms["v1"]["impressions"] == expect["experiments"]["up-a"]["v1"]["impressions"]
