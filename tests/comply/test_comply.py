"""The compliance policy and its one checker: compliant, non-compliant and borderline texts, bad policy files."""

from __future__ import annotations

import pytest

from lola.comply import ACTIVE, BLOCKED, PENDING, ComplianceGate, check_text, load_policy, parse_policy, shouting_ratio
from lola.errors import ConfigError

POLICY = parse_policy("""
name: test
max_length: 60
min_length: 5
shouting: {max_ratio: 0.5, min_letters: 10}
banned_terms: [free money, casino]
banned_patterns: ['https?://', '!{3,}']
unverifiable_claims: ['\\bguaranteed?\\b', '\\bbest ever\\b']
required_disclosures:
  - experiments: 'paid-*'
    any_of: [Sponsored, 'Ad:']
""")


def rules(text: str, experiment: str | None = None) -> list[str]:
    return [v.rule for v in check_text(POLICY, text, experiment).violations]


@pytest.mark.parametrize("text", [
    "This dog waited 10 years for a family. Then this happened.",
    "NASA finds water on Mars",              # an acronym: too few letters to shout
    "What the casinos of Vegas hide",        # 'casinos' is not the banned word 'casino'
])
def test_compliant_texts_pass(text):
    assert check_text(POLICY, text).ok, check_text(POLICY, text).reason


@pytest.mark.parametrize("text, rule", [
    ("x" * 61, "max_length"),
    ("Hi", "min_length"),
    ("THIS IS THE NEWS YOU NEED today", "shouting"),
    ("Win FREE   Money tonight", "banned_term"),            # case and whitespace do not hide a term
    ("Ｃａｓｉｎｏ nights are back in town", "banned_term"),   # full-width letters are normalised
    ("Read more at https://example.com", "banned_pattern"),
    ("You will not believe this!!!", "banned_pattern"),
    ("A guaranteed way to sleep better", "unverifiable_claim"),
    ("The best ever pancake recipe", "unverifiable_claim"),
])
def test_noncompliant_texts_name_their_rule(text, rule):
    verdict = check_text(POLICY, text)
    assert not verdict.ok and rule in rules(text)
    assert rule in verdict.reason and "\n" not in verdict.reason


def test_borderline_texts_sit_on_the_right_side_of_each_limit():
    assert rules("x" * 60) == [] and rules("x" * 61) == ["max_length"]
    assert rules("abcde") == [] and rules("abcd") == ["min_length"]
    assert shouting_ratio("ABCDEfghij klmno") == (5 / 15, 15)
    assert rules("ABCDEFGHij klmnop") == []            # 8/16 = exactly 50 %: allowed ("more than" shouts)
    assert rules("ABCDEFGHIj klmnop") == ["shouting"]  # 9/16 > 50 %
    assert rules("ABCDEFGhij klmnop") == []            # 7/16 < 50 %
    assert rules("ABCDEFGHI") == []                  # 9 letters < min_letters: not judged
    assert rules("guarantees are for cars") == []    # the claim pattern is a whole word
    assert rules("a guarantee is for cars") == ["unverifiable_claim"]


def test_required_disclosure_applies_to_its_experiments_only():
    text = "Ten ways to save on groceries"
    assert rules(text, "paid-42") == ["disclosure"]
    assert rules("Sponsored: " + text, "paid-42") == []
    assert rules("ad: " + text, "paid-42") == []
    assert rules(text, "organic-1") == [] and rules(text) == []


def test_gate_states():
    gate = ComplianceGate(POLICY)
    assert gate.check("e", "v", "A calm, honest headline") == (ACTIVE, None)
    state, reason = gate.check("e", "v", "A guaranteed win")
    assert state == BLOCKED and reason.startswith("unverifiable_claim")
    pending = ComplianceGate(POLICY, classifier=lambda t: "toxic" if "idiot" in t else None)
    assert pending.check("e", "v", "A calm, honest headline")[0] == PENDING
    assert pending.check("e", "v", "A guaranteed win")[0] == BLOCKED   # the rules run first, inline
    assert pending.classify("e", "v", "A calm, honest headline") == (ACTIVE, None)
    assert pending.classify("e", "v", "Only an idiot would miss it") == (BLOCKED, "classifier: toxic")


def test_policy_change_rechecks_running_variants():
    gate = ComplianceGate(POLICY)
    running = [("e", "a", "A calm, honest headline", ACTIVE), ("e", "b", "Penguins in the snow", ACTIVE),
               ("e", "c", "A guaranteed win", BLOCKED), ("e", "d", "Penguins again", "retired")]
    stricter = POLICY.model_copy(update={"banned_terms": ("penguins",), "unverifiable_claims": ()})
    changes = gate.recheck(running, stricter)
    assert [(c.variant_id, c.state) for c in changes] == [("b", BLOCKED), ("c", ACTIVE)]
    assert gate.policy is stricter


def test_the_default_policy_loads_and_blocks_the_obvious():
    policy = load_policy()
    assert policy.name == "default"
    assert check_text(policy, "This dog waited 10 years for a family. Then this happened.").ok
    assert not check_text(policy, "Doctors hate him: a 100% guaranteed miracle cure").ok
    assert not check_text(policy, "Win $500 now at https://x.io").ok


@pytest.mark.parametrize("text, message", [
    ("max_length: [1, 2", "not valid YAML at line"),
    ("- a\n- b\n", "a policy is a YAML mapping"),
    ("max_length: -3", "max_length: Input should be greater than or equal to 1"),
    ("banned_patterns: ['(unclosed']", "invalid regular expression"),
    ("banned_terms: [ok]\ntypo_rule: 1", "typo_rule: Extra inputs are not permitted"),
    ("min_length: 50\nmax_length: 10", "min_length 50 > max_length 10"),
    ("required_disclosures: [{experiments: 'x-*', any_of: []}]", "any_of"),
    ("shouting: {max_ratio: 2}", "shouting.max_ratio"),
])
def test_bad_policy_files_get_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(str(path))


def test_missing_policy_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read policy"):
        load_policy(tmp_path / "nope.yaml")
