"""The worker's compliance gate (lola.stream.compliance): rule checks inline, the classifier
off the decision path, re-checks when the policy file changes. Pure: shards without a broker;
the broker tests are in test_compliance_broker.py."""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import orjson
import pytest

from lola.errors import ConfigError
from lola.stream.compliance import WorkerCompliance, load_classifier
from lola.stream.processor import ShardProcessor

POLICY = """version: 1
name: test
max_length: 150
banned_terms: [ducks]
"""


def classify(text):
    """The test classifier: blocks texts about geese."""
    return "about geese" if "geese" in text else None


def make_classifier(settings):
    return classify


def not_a_classifier(settings):
    return "a string"


def broken_classifier_factory(settings):
    return lambda text: 1 / 0


@pytest.fixture
def classifier_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "lola_test_compliance", sys.modules[__name__])
    return "lola_test_compliance"


def settings(policy, classifier=None):
    return SimpleNamespace(compliance_policy=str(policy), compliance_classifier=classifier)


def rec(offset, vid, text):
    return offset, b"e", orjson.dumps({"type": "variant", "experiment_id": "e", "variant_id": vid, "text": text})


def states(shard):
    exp = shard.experiments["e"]
    return dict(zip(exp.variant_ids, exp.states))


class Loop:
    """What the worker's loop does with state requests: apply them by the owning shard."""

    def __init__(self):
        self.shards = {}

    def request(self, experiment_id, variant_id, state, reason):
        for shard in self.shards.values():
            if experiment_id in shard.experiments:
                shard.set_variant_state(experiment_id, variant_id, state, reason)


def test_rules_block_inline_and_a_reload_rechecks_running_variants(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    loop = Loop()
    wc = WorkerCompliance(settings(path), loop.request)
    shard = loop.shards[0] = ShardProcessor(0, gate=wc.gate)
    out = shard.process([rec(0, "a", "Seven ducks cross the road together"), rec(1, "b", "Seven geese cross the road")])
    assert [d.reason for d in out.dead_letters] == ["noncompliant"]
    assert states(shard) == {"a": "blocked", "b": "active"}
    assert "ducks" in shard.snapshot("e")["arms"]["a"]["state_reason"]
    path.write_text(POLICY.replace("[ducks]", "[geese]"))  # the policy changes: SIGHUP
    wc.request_reload()
    wc.tick(loop.shards)
    assert states(shard) == {"a": "active", "b": "blocked"} and wc.rechecks == 1
    path.write_text("version: [not, a, policy")  # a broken file: logged, the old policy stays
    wc.request_reload()
    wc.tick(loop.shards)
    assert states(shard) == {"a": "active", "b": "blocked"} and wc.rechecks == 1


def test_with_a_classifier_new_variants_wait_pending_until_classified(tmp_path, classifier_module):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    loop = Loop()
    wc = WorkerCompliance(settings(path, f"{classifier_module}:make_classifier"), loop.request)
    shard = loop.shards[0] = ShardProcessor(0, gate=wc.gate)
    shard.process([rec(0, "a", "A calm headline about swans"), rec(1, "b", "A calm headline about geese"),
                   rec(2, "c", "Ducks are banned by the rules")])
    assert states(shard) == {"a": "pending", "b": "pending", "c": "blocked"}
    assert not shard.snapshot("e")["arms"]["a"]["active"]  # a pending variant is never served
    deadline = time.monotonic() + 30
    while "pending" in states(shard).values() and time.monotonic() < deadline:
        wc._next_scan = 0.0  # scan at once (the worker scans every SCAN_INTERVAL_S)
        wc.tick(loop.shards)
        time.sleep(0.05)
    assert states(shard) == {"a": "active", "b": "blocked", "c": "blocked"}
    assert shard.experiments["e"].reasons[1] == "classifier: about geese"
    wc.close()


def test_a_failing_classifier_leaves_the_variant_pending(tmp_path, classifier_module):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    loop = Loop()
    wc = WorkerCompliance(settings(path, f"{classifier_module}:broken_classifier_factory"), loop.request)
    shard = loop.shards[0] = ShardProcessor(0, gate=wc.gate)
    shard.process([rec(0, "a", "A calm headline about swans")])
    for _ in range(20):
        wc._next_scan = 0.0
        wc.tick(loop.shards)
        time.sleep(0.02)
    assert states(shard) == {"a": "pending"}
    wc.close()


def test_bad_configuration_is_one_line(tmp_path, classifier_module):
    with pytest.raises(ConfigError, match="cannot read policy"):
        WorkerCompliance(settings(tmp_path / "missing.yaml"), lambda *a: None)
    with pytest.raises(ConfigError, match="cannot be imported"):
        load_classifier("no_such_module_xyz:f", None)
    with pytest.raises(ConfigError, match="not a callable"):
        load_classifier(f"{classifier_module}:not_a_classifier", None)
    default = WorkerCompliance(SimpleNamespace(compliance_policy="default", compliance_classifier=None),
                               lambda *a: None)
    assert default.gate.check("e", "v", "Get rich quick with this casino")[0] == "blocked"
