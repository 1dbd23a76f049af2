"""Preference pairs from the archive and the DPO loss (no model)."""

from __future__ import annotations

import math

import pytest

from lola.comply import parse_policy
from lola.data.upworthy import Package
from lola.generation.tune import dpo_loss, preference_pairs

POLICY = parse_policy("unverifiable_claims: ['\\bguaranteed\\b']\n")
LEDE = "<p>A long enough lede about a priest who debates a creationist on live television.</p>"


def pkg(test, headline, imps, clicks, lede=LEDE):
    return Package(test, "eye", headline, imps, clicks, lede=lede)


def test_pairs_are_significant_winner_first_and_compliant():
    packages = [
        pkg("t1", "Winner Headline", 10_000, 300), pkg("t1", "Loser Headline", 10_000, 100),
        pkg("t1", "Close Second", 10_000, 295),                         # not significantly below the winner
        pkg("t2", "A guaranteed winner", 10_000, 400), pkg("t2", "Plain", 10_000, 100),  # winner blocked
        pkg("t3", "No Lede A", 10_000, 400, lede=""), pkg("t3", "No Lede B", 10_000, 100, lede=""),
    ]
    pairs = preference_pairs(packages, POLICY)
    got = {(p.chosen, p.rejected) for p in pairs}
    assert got == {("Winner Headline", "Loser Headline"), ("Close Second", "Loser Headline")}
    assert all(p.brief.startswith("A long enough lede") for p in pairs)


def test_dpo_loss_matches_its_formula():
    torch = pytest.importorskip("torch")
    pc, pr = torch.tensor([-10.0, -12.0]), torch.tensor([-11.0, -9.0])
    rc, rr = torch.tensor([-10.5, -12.0]), torch.tensor([-10.5, -10.0])
    loss, margin = dpo_loss(pc, pr, rc, rr, beta=0.5)
    want_m = [0.5 * ((-10 + 10.5) - (-11 + 10.5)), 0.5 * ((-12 + 12) - (-9 + 10))]
    assert margin.tolist() == pytest.approx(want_m)
    want = sum(-math.log(1 / (1 + math.exp(-m))) for m in want_m) / 2
    assert float(loss) == pytest.approx(want)
    # identical policy and reference: margin 0, loss log 2 (where training starts)
    loss0, _ = dpo_loss(rc, rr, rc, rr, beta=0.1)
    assert float(loss0) == pytest.approx(math.log(2))


def test_sequence_logprobs_against_full_logits(tiny_base):
    """The response-only projection equals the plain full-logits sum (on the tiny random Llama, with LoRA)."""
    torch = pytest.importorskip("torch")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaForCausalLM

    from lola.generation.tune import sequence_logprobs

    tok = AutoTokenizer.from_pretrained(tiny_base)
    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM.from_pretrained(tiny_base),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    prompts, responses = ["the dog did", "why how money health family"], ["love cats", "music"]
    got = sequence_logprobs(model, tok, prompts, responses)
    for k, (p, r) in enumerate(zip(prompts, responses)):
        p_ids = tok(p, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + tok(r + "<|im_end|>", add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        want = sum(float(logp[t - 1, ids[0, t]]) for t in range(len(p_ids), ids.shape[1]))
        assert float(got[k]) == pytest.approx(want, rel=1e-5, abs=1e-5)
