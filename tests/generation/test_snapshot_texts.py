"""The snapshot carries each variant's text (cut to SNAPSHOT_TEXT_CHARS), which --from-experiment reads."""

from __future__ import annotations

import msgspec
import orjson

from lola.generation.cli import active_texts
from lola.stream import events as ev
from lola.stream.processor import ShardProcessor


def test_snapshot_texts_of_active_variants():
    proc = ShardProcessor(0)
    long = "x" * (ev.SNAPSHOT_TEXT_CHARS + 50)
    recs = [(i, b"e", orjson.dumps({"type": "variant", "experiment_id": "e", "variant_id": v, "text": t}))
            for i, (v, t) in enumerate([("a", "Dogs love snow"), ("b", long), ("c", "Old one")])]
    recs.append((3, b"e", orjson.dumps({"type": "variant", "experiment_id": "e", "variant_id": "c", "text": "Old one",
                                        "action": "retire"})))
    assert proc.process(recs).dead_letters == []
    snap = proc.snapshot("e")
    assert snap["arms"]["a"]["text"] == "Dogs love snow"
    assert snap["arms"]["b"]["text"] == "x" * ev.SNAPSHOT_TEXT_CHARS
    assert active_texts(snap) == ["Dogs love snow", "x" * ev.SNAPSHOT_TEXT_CHARS]
    decoded = msgspec.json.decode(orjson.dumps(snap), type=ev.PolicySnapshot)   # the published schema holds it
    assert decoded.arms["b"].text == "x" * ev.SNAPSHOT_TEXT_CHARS
