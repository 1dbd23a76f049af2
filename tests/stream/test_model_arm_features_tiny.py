"""LLM-LinUCB arm features from the tiny exported model of tests/conftest.py (seconds, like
tests/export/test_export_tiny.py): the export stores a sha256-checked projection, the worker's
prior path turns a variant's text into projection(embedding(text)), and a model exported
before the projection falls back to hashed text features with one log line."""

from __future__ import annotations

import json
import logging
import shutil
import time

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from lola.cli import app
from lola.errors import ModelIntegrityError
from lola.export.card import CARD_FILE, ModelCard
from lola.export.projection import PROJECTION_FILE, EmbeddingProjection
from lola.export.serve import OnnxPriorModel
from lola.stream.features import model_features, text_features
from lola.stream.priors import OnnxModelProvider, PriorService
from lola.stream.processor import ShardProcessor
from lola.stream.shard import ProcessorConfig

D = 8
TEXTS = {"a": "you won't believe what this dog did", "b": "science says people love headlines about cats"}


def _served_rows(model_dir) -> tuple[ShardProcessor, int, list]:
    """A shard with one llm_linucb experiment whose priors came through the worker's prior service."""
    proc = ShardProcessor(0, ProcessorConfig(feature_dim=D))
    recs = [(i, b"x", orjson.dumps({"type": "variant", "experiment_id": "x", "variant_id": v, "text": t,
                                     **({"settings": {"policy": "llm_linucb"}} if i == 0 else {})}))
            for i, (v, t) in enumerate(TEXTS.items())]
    out = proc.process(recs)
    assert out.dead_letters == [] and len(out.prior_requests) == 2
    svc = PriorService(OnnxModelProvider(model_dir, variant="fp32", device="cpu"), timeout_s=60).start()
    got, deadline = [], time.monotonic() + 60
    try:
        for r in out.prior_requests:
            svc.submit(r)
        while len(got) < 2 and time.monotonic() < deadline:
            got += svc.results()
            time.sleep(0.02)
    finally:
        svc.stop()
    assert len(got) == 2, svc.fallbacks
    for res in got:
        assert proc.apply_prior(res.experiment_id, res.variant_id, res.prior, res.features)
    return proc, proc.experiments["x"].row, got


def test_export_stores_a_checked_projection_and_worker_arms_get_projection_of_embedding(exported_tiny, tmp_path):
    card, _ = ModelCard.load(exported_tiny)
    assert card.projection is not None and card.projection.file == PROJECTION_FILE
    assert PROJECTION_FILE in card.files  # sha256-checked like every file
    proj = EmbeddingProjection.from_json((exported_tiny / PROJECTION_FILE).read_bytes())
    assert proj.dim == card.projection.dim and 1 <= proj.dim <= 16

    proc, row, got = _served_rows(exported_tiny)
    emb = OnnxPriorModel(exported_tiny, provider="cpu", variant="fp32").embed(list(TEXTS.values()))
    want = proj.transform(emb)
    for slot, vid in enumerate(TEXTS):
        np.testing.assert_allclose(proc.state.features[row, slot], model_features(want[slot], D), rtol=1e-5, atol=1e-6)
        assert not np.allclose(proc.state.features[row, slot], text_features(TEXTS[vid], D))

    bad = tmp_path / "tampered"
    shutil.copytree(exported_tiny, bad)
    data = json.loads((bad / PROJECTION_FILE).read_text())
    data["scale"][0] *= 2
    (bad / PROJECTION_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        OnnxPriorModel(bad, provider="cpu")


def test_a_model_exported_before_the_projection_keeps_hashed_features_and_says_so(exported_tiny, tmp_path, caplog):
    from lola.export.onnx_export import write_card

    old = tmp_path / "old"
    shutil.copytree(exported_tiny, old)
    (old / PROJECTION_FILE).unlink()
    raw = json.loads((old / CARD_FILE).read_text())
    raw.pop("projection")
    write_card(old, raw)
    assert OnnxPriorModel(old, provider="cpu").projection is None

    with caplog.at_level(logging.WARNING, logger="lola.stream.priors"):
        proc, row, got = _served_rows(old)
    assert all(r.features is None and 0.0 <= r.prior <= 1.0 for r in got)
    for slot, vid in enumerate(TEXTS):
        np.testing.assert_array_equal(proc.state.features[row, slot], text_features(TEXTS[vid], D))
    assert sum("no embedding projection" in r.getMessage() for r in caplog.records) == 1

    # `lola priors projection` adds it back: the export's own fit, on the same train headlines
    res = CliRunner().invoke(app, ["priors", "projection", "--model", str(old)])
    assert res.exit_code == 0, res.output
    again = EmbeddingProjection.from_json((old / PROJECTION_FILE).read_bytes())
    first = EmbeddingProjection.from_json((exported_tiny / PROJECTION_FILE).read_bytes())
    assert json.loads(res.output.strip().splitlines()[-1])["dim"] == first.dim == ModelCard.load(old)[0].projection.dim
    np.testing.assert_allclose(again.components, first.components, rtol=1e-6, atol=1e-8)
