"""Writes NAME.bin + NAME.json with the checkpoint code of an older main. Kept for the record;
the committed files are what tests/stream/test_upgrade.py restores. Run once from the
repository root of THAT commit:

    .venv/bin/python tests/stream/data/make_main_checkpoint.py                        # 1bcfd1f, before issue 19
    .venv/bin/python tests/stream/data/make_main_checkpoint.py main_checkpoint_v2_keys  # 52d7908, keyed de-dup
"""

import json
import pathlib
import sys

import orjson

from lola.stream.processor import ShardProcessor

here = pathlib.Path(__file__).parent
name = sys.argv[1] if len(sys.argv) > 1 else "main_checkpoint_v1"
proc = ShardProcessor(3)
recs = []
for e in ("up-a", "up-b"):
    for v in ("v0", "v1", "v2"):
        body = {"type": "variant", "experiment_id": e, "variant_id": v, "text": f"text {v} of {e}"}
        if v == "v0":
            body["settings"] = {"policy": "llm2ucb", "attribution_window_s": 3600}
        recs.append((e, body))
recs.append(("up-b", {"type": "variant", "action": "retire", "experiment_id": "up-b", "variant_id": "v2", "text": ""}))
for i in range(60):
    e = "up-a" if i % 3 else "up-b"
    v = f"v{i % 2 + (i % 5 == 0)}"
    recs.append((e, {"type": "impression", "event_id": f"i{i}", "experiment_id": e, "variant_id": v,
                     "ts": 1_700_000_000 + i}))
    if i % 4 == 0:
        recs.append((e, {"type": "click", "event_id": f"c{i}", "experiment_id": e, "variant_id": v,
                         "ts": 1_700_000_000 + i + 1, "impression_id": f"i{i}"}))
    if i % 10 == 0:
        recs.append((e, {"type": "conversion", "event_id": f"k{i}", "experiment_id": e, "variant_id": v,
                         "ts": 1_700_000_000 + i + 2, "value": 2.5, "impression_id": f"i{i}"}))
proc.process([(o, e.encode(), orjson.dumps(b)) for o, (e, b) in enumerate(recs)], now=1_700_001_000.0)
proc.apply_prior("up-a", "v0", 0.125)
blob = proc.to_checkpoint("lola.events")
(here / f"{name}.bin").write_bytes(blob)
expect = {"next_offset": proc.next_offset, "experiments": {}}
for exp_id, exp in proc.experiments.items():
    snap = proc.snapshot(exp_id, now=0.0)
    expect["experiments"][exp_id] = {v: {k: a[k] for k in ("impressions", "clicks", "conversions", "prior", "active")}
                                     for v, a in snap["arms"].items()}
(here / f"{name}.json").write_text(json.dumps(expect, indent=1, sort_keys=True) + "\n")
print(len(blob), expect["next_offset"])
