"""Contextual experiments under the variant lifecycle (issue 19 x issue 24): only active arms
are served by the contextual model, and an evicted experiment's model row is reused."""

from __future__ import annotations

import orjson

from lola.stream.processor import ShardProcessor

SPEC = {"algorithm": "linucb", "alpha": 0.3, "n_aux": 0, "features": {"categorical": ["segment"]}}


class Gate:
    def __init__(self, answers):
        self.answers = answers

    def check(self, experiment_id, variant_id, text):
        return self.answers.get(variant_id, ("active", None))


def rec(offset, **event):
    return offset, event["experiment_id"].encode(), orjson.dumps(event)


def variants(start, exp, ids, **settings):
    return [rec(start + i, type="variant", experiment_id=exp, variant_id=v, text=f"headline {v}",
                settings={"contextual": SPEC, **settings}) for i, v in enumerate(ids)]


def requests(start, exp, n, tag):
    return [rec(start + i, type="decision_request", experiment_id=exp, request_id=f"{tag}{i}",
                context={"segment": f"s{i % 3}"}) for i in range(n)]


def chosen(out):
    return [orjson.loads(v)["variant_id"] for _, v in out.decisions]


def test_blocked_pending_and_retired_arms_are_never_chosen_by_the_contextual_model():
    proc = ShardProcessor(0, gate=Gate({"b": ("blocked", "banned term"), "c": ("pending", "awaiting review")}))
    out = proc.process(variants(0, "e", ["a", "b", "c", "d"]), now=1000.0)
    assert [d.reason for d in out.dead_letters] == ["noncompliant"]
    out = proc.process(requests(10, "e", 200, "r"), now=1001.0)
    assert set(chosen(out)) <= {"a", "d"} and len(out.decisions) == 200
    row = proc.ctx.experiments["e"].row
    assert proc.ctx.state.active[row, :4].tolist() == [True, False, False, True]  # the model's own mask
    assert all(orjson.loads(v)["policy"] == "ctx_linucb" for _, v in out.decisions)
    assert proc.set_variant_state("e", "c", "active")
    proc.process([rec(300, type="variant", experiment_id="e", variant_id="a", text="headline a", action="retire")],
                 now=1002.0)
    out = proc.process(requests(400, "e", 200, "q"), now=1003.0)
    assert set(chosen(out)) <= {"c", "d"} and len(out.decisions) == 200
    assert proc.ctx.state.active[row, :4].tolist() == [False, False, True, True]


def test_an_archived_contextual_experiment_is_evicted_and_its_model_row_reused():
    proc = ShardProcessor(0)
    proc.process(variants(0, "old", ["a", "b"], attribution_window_s=1), now=1000.0)
    proc.process(requests(10, "old", 20, "r"), now=1000.0)
    assert len(proc.ctx.join.entries) == 20
    proc.process([rec(40, type="experiment", experiment_id="old", action="archive")], now=1000.0)
    # log time passes the attribution window: the batch's sweep evicts it
    proc.process([rec(45, type="variant", experiment_id="plain", variant_id="p", text="t")], timestamps=[5000.0],
                 now=5000.0)
    assert "old" not in proc.experiments and "old" not in proc.ctx
    proc.process(variants(50, "new", ["x", "y", "z"]), timestamps=[5000.0] * 3, now=5000.0)
    assert proc.ctx.state.n_experiments == 1                  # the freed row was reused, not a new one
    assert not proc.ctx.join.entries                          # the evicted experiment's contexts are gone
    out = proc.process(requests(60, "new", 30, "n"), now=5001.0)
    assert set(chosen(out)) <= {"x", "y", "z"} and len(out.decisions) == 30
    restored = ShardProcessor.from_checkpoint(proc.to_checkpoint("t"))
    assert restored.ctx.experiments["new"].row == proc.ctx.experiments["new"].row
