"""The SFT stage of ``lola variants tune``: its data (train split only), the stage list, stacked
adapters, and a tiny end-to-end SFT -> DPO run on the random 2-layer Llama."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lola.comply import parse_policy
from lola.data.upworthy import Package, split_packages
from lola.errors import ConfigError
from lola.generation.model import adapter_stages
from lola.generation.sft import Example, sft_examples
from lola.generation.tune import Pair, preference_pairs
from lola.generation.tune_cli import parse_stages

POLICY = parse_policy("max_length: 120\n")


def test_sft_examples_are_the_distinct_winners_in_order():
    pairs = [Pair("story a", "Win A", "Lose 1"), Pair("story a", "Win A", "Lose 2"),
             Pair("story a", "Second A", "Lose 1"), Pair("story b", "Win A", "Lose 3")]
    assert sft_examples(pairs) == [Example("story a", "Win A"), Example("story a", "Second A"),
                                   Example("story b", "Win A")]
    assert sft_examples([]) == []


def archive(n_tests: int = 60, seed: int = 0) -> list[Package]:
    """Tests whose headlines and ledes name their test, each with a clear winner."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n_tests):
        lede = f"<p>The story of test number {t}, told at enough length to be a brief.</p>"
        for h, ctr in enumerate((0.04, 0.01, 0.012)):
            imps = int(rng.integers(8000, 12000))
            out.append(Package(f"t{t:03d}", f"e{t:03d}", f"Headline {h} of test {t}", imps, int(imps * ctr), lede=lede))
    return out


def test_sft_data_comes_from_the_train_split_only():
    parts = split_packages(archive())
    assert parts["train"] and parts["test"]
    examples = sft_examples(preference_pairs(parts["train"], POLICY))
    test_headlines = {p.headline for p in parts["test"]}
    test_briefs = {f"test number {int(p.test_id[1:])}," for p in parts["test"]}
    train_winners = {p.headline for p in parts["train"] if p.headline.startswith("Headline 0 ")}
    assert examples and {e.target for e in examples} == train_winners     # every train winner, nothing else
    assert not {e.target for e in examples} & test_headlines
    assert not any(b in e.brief for e in examples for b in test_briefs)
    # the same builder on the test split does produce those stories: the check above can fail
    assert {e.target for e in sft_examples(preference_pairs(parts["test"], POLICY))} & test_headlines


@pytest.mark.parametrize("text, want", [("sft,dpo", ["sft", "dpo"]), ("dpo, sft", ["sft", "dpo"]),
                                        ("dpo", ["dpo"]), ("sft", ["sft"])])
def test_parse_stages(text, want):
    assert parse_stages(text) == want


@pytest.mark.parametrize("text", ["", "sft,sft", "ppo", "sft,,rl"])
def test_parse_stages_rejects(text):
    with pytest.raises(ConfigError, match="--stages"):
        parse_stages(text)


def test_adapter_stages(tmp_path):
    single = tmp_path / "single"
    single.mkdir()
    (single / "adapter_config.json").write_text("{}")
    assert adapter_stages(single) == [single]
    stacked = tmp_path / "stacked"
    for name in ("sft", "dpo"):
        (stacked / name).mkdir(parents=True)
        (stacked / name / "adapter_config.json").write_text("{}")
    (stacked / "stages.json").write_text(json.dumps(["sft", "dpo"]))
    assert adapter_stages(stacked) == [stacked / "sft", stacked / "dpo"]
    (stacked / "stages.json").write_text(json.dumps(["sft", "dpo", "rl"]))   # a stage without its adapter
    with pytest.raises(ConfigError, match="stages.json"):
        adapter_stages(stacked)
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        adapter_stages(tmp_path / "nothing")


@pytest.fixture(scope="module")
def chat_base(tiny_base, tmp_path_factory):
    """The tiny Llama with a plain chat template (the generator builds its prompts with one)."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-chat")
    tok = AutoTokenizer.from_pretrained(tiny_base)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    tok.save_pretrained(out)
    LlamaForCausalLM.from_pretrained(tiny_base).save_pretrained(out)
    return out


def test_sft_then_dpo_on_the_tiny_model(chat_base, tmp_path):
    """SFT lowers the loss on what it fits; DPO trains on top with the SFT model as reference;
    the generator merges both stages."""
    pytest.importorskip("peft")
    from lola.generation.model import Generator
    from lola.generation.sft import train_sft
    from lola.generation.tune import train_dpo

    examples = [Example("the dog did love", "cats music"), Example("why how money", "health family")]
    sft = train_sft(examples, tmp_path / "sft", minutes=5, max_steps=40, batch_size=2, lr=5e-2, seed=0,
                    held_out=examples, base=str(chat_base), log=lambda m: None)
    assert sft["steps"] == 40 and sft["held_out_nll_after"] < sft["held_out_nll_before"]
    pairs = [Pair("the dog did love", "cats music", "money why"), Pair("why how money", "health family", "dog")]
    dpo = train_dpo(pairs, tmp_path / "dpo", minutes=5, max_steps=3, batch_size=2, seed=0, held_out=pairs,
                    reference=tmp_path / "sft", base=str(chat_base), log=lambda m: None)
    assert dpo["steps"] == 3 and dpo["reference"] == str(tmp_path / "sft")
    assert dpo["loss_first_20"] > 0
    (tmp_path / "stages.json").write_text(json.dumps(["sft", "dpo"]))
    base_gen, tuned = Generator(base=str(chat_base)), Generator(base=str(chat_base), adapter=tmp_path)
    w0 = base_gen.model.model.layers[0].self_attn.q_proj.weight
    w1 = tuned.model.model.layers[0].self_attn.q_proj.weight
    assert not np.allclose(w0.detach().numpy(), w1.detach().numpy())
