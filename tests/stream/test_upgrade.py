"""Checkpoints written by older mains (tests/stream/data/make_main_checkpoint.py) restore in
this build with exact counts: main_checkpoint_v1.bin (before issue 19) and
main_checkpoint_v2_keys.bin (52d7908, whose de-duplication window held the keys themselves;
this build holds their hashes and hashes the keys on restore)."""

import json
import pathlib

import orjson
import pytest

from lola.stream.processor import ShardProcessor

DATA = pathlib.Path(__file__).parent / "data"


OLD = ["main_checkpoint_v1", "main_checkpoint_v2_keys"]


def _restored(name: str) -> tuple[ShardProcessor, dict]:
    blob = (DATA / f"{name}.bin").read_bytes()
    expect = json.loads((DATA / f"{name}.json").read_text())
    return ShardProcessor.from_checkpoint(blob), expect


@pytest.mark.parametrize("name", OLD)
def test_main_checkpoint_restores_exact_counts(name):
    proc, expect = _restored(name)
    assert proc.next_offset == expect["next_offset"]
    assert set(proc.experiments) == set(expect["experiments"])
    for exp_id, arms in expect["experiments"].items():
        snap = proc.snapshot(exp_id, now=0.0)
        assert set(snap["arms"]) == set(arms)
        for vid, want in arms.items():
            got = snap["arms"][vid]
            for k in ("impressions", "clicks", "conversions", "prior", "active"):
                assert got[k] == want[k], (exp_id, vid, k)


@pytest.mark.parametrize("name", OLD)
def test_main_checkpoint_keeps_dedup_and_counting(name):
    proc, expect = _restored(name)
    before = proc.snapshot("up-a", now=0.0)["arms"]["v0"]["impressions"]
    # i4 was an impression of up-a before the checkpoint: a re-delivery is a duplicate
    dup = orjson.dumps({"type": "impression", "event_id": "i4", "experiment_id": "up-a", "variant_id": "v1",
                        "ts": 1_700_000_004})
    new = orjson.dumps({"type": "impression", "event_id": "fresh-1", "experiment_id": "up-a", "variant_id": "v0",
                        "ts": 1_700_000_100})
    out = proc.process([(expect["next_offset"], b"up-a", dup), (expect["next_offset"] + 1, b"up-a", new)],
                       now=1_700_001_000.0)
    assert not out.dead_letters
    arms = proc.snapshot("up-a", now=0.0)["arms"]
    assert arms["v0"]["impressions"] == before + 1
    assert arms["v1"]["impressions"] == expect["experiments"]["up-a"]["v1"]["impressions"]


def test_keyed_checkpoint_keeps_click_counts_per_impression():
    """The v2 record's click counts are keyed by impression key; restored, i4 of up-a (clicked
    once) is at the cap of 1 and i5 (never clicked) takes a click."""
    proc, expect = _restored("main_checkpoint_v2_keys")
    click = lambda eid, imp: orjson.dumps({"type": "click", "event_id": eid, "experiment_id": "up-a",
                                           "variant_id": "v0", "ts": 1_700_000_090, "impression_id": imp})
    out = proc.process([(expect["next_offset"], b"up-a", click("c-new-4", "i4")),
                        (expect["next_offset"] + 1, b"up-a", click("c-new-5", "i5"))], now=1_700_001_000.0)
    assert [d.reason for d in out.dead_letters] == ["click_cap"] and out.counts == {"Click": 1}
