"""The typed model card: a card from the current `make model` path loads unchanged; bad cards get one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lola.errors import ModelIntegrityError
from lola.export.card import CARD_FORMAT, ModelCard

# Written by `lola priors build-default` (what `make model` runs) on the tiny test model,
# with this code (tests/export/test_eval_bench_tiny.py builds a fresh one under the model marker).
SAMPLE = Path(__file__).with_name("model_card_v1.json")


def sample() -> dict:
    return json.loads(SAMPLE.read_text())


def test_a_current_card_loads_unchanged_and_round_trips():
    card = ModelCard.parse(SAMPLE.read_bytes())
    assert card.format == CARD_FORMAT and card.target == "level_deviation" and card.tokenizer.max_length == 32
    assert card.readout is not None and card.readout.file in card.files
    assert card.as_dict() == sample()  # nothing dropped, nothing added


def test_defaults_live_in_the_card():
    minimal = {k: v for k, v in sample().items() if k in ("tokenizer", "target_scaling", "variants")}
    card = ModelCard.parse(minimal)
    assert (card.target, card.text_mode, card.readout, card.files, card.hyperparameters) == \
        ("ctr", "headline", None, {}, {})


@pytest.mark.parametrize("change,message", [
    (lambda c: c.pop("tokenizer"), "tokenizer: Field required"),
    (lambda c: c["target_scaling"].update(std=0), "target_scaling.std: Input should be greater than 0"),
    (lambda c: c.update(target="clicks"), "target: Input should be 'ctr' or 'level_deviation'"),
    (lambda c: c.update(text_mode="body"), "text_mode: Value error, must be one of headline, headline_context"),
    (lambda c: c["files"]["model.onnx"].update(sha256="abc"), "files.model.onnx.sha256"),
    (lambda c: c.update(variants={}), "variants: "),
])
def test_a_bad_card_is_one_clear_line(change, message):
    card = sample()
    change(card)
    with pytest.raises(ModelIntegrityError) as info:
        ModelCard.parse(json.dumps(card).encode(), "m/model_card.json")
    text = str(info.value)
    assert text.startswith("m/model_card.json: invalid model card: ") and message in text and "\n" not in text


def test_other_formats_and_non_cards_are_refused(tmp_path):
    with pytest.raises(ModelIntegrityError, match="format 2 is not supported"):
        ModelCard.parse({**sample(), "format": 2})
    with pytest.raises(ModelIntegrityError, match="not valid JSON"):
        ModelCard.parse(b"{nope")
    with pytest.raises(ModelIntegrityError, match="a model card is a JSON object"):
        ModelCard.parse(b"[1]")
    with pytest.raises(ModelIntegrityError, match="no model_card.json"):
        ModelCard.load(tmp_path)


def test_write_card_refuses_a_card_readers_would_refuse(tmp_path):
    from lola.export.onnx_export import write_card

    bad = sample()
    bad.pop("tokenizer")
    with pytest.raises(ModelIntegrityError, match="tokenizer"):
        write_card(tmp_path, bad)
    assert not (tmp_path / "model_card.json").exists()


def test_the_card_module_is_torch_free():
    code = "import sys, lola.export.card, lola.export.serve; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
