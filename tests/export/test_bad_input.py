"""Every bad input of the export area gets a clear LolaError (gathered here)."""

from __future__ import annotations

import json
import shutil

import pytest

from lola.errors import ConfigError, DataError, ModelIntegrityError
from lola.export.config import make_config


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"lora_r": 0}, "lora_r must be >= 1"),
        ({"lora_dropout": 1.0}, "lora_dropout must be in [0, 1)"),
        ({"learning_rate": 0.0}, "learning_rate must be in (0, 1]"),
        ({"max_steps": 0}, "max_steps must be >= 1"),
        ({"epochs": -1.0}, "epochs must be > 0"),
        ({"text_mode": "title"}, "text_mode"),
        ({"max_steps": 5, "warmup_steps": 5}, "warmup_steps (5) must be below max_steps (5)"),
        ({"lora_target_modules": ()}, "lora_target_modules must name at least one module"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_config_rules(overrides, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        make_config("full", **overrides)
    assert fragment in str(info.value)


def test_config_is_frozen_and_profile_checked():
    config = make_config("quick")
    with pytest.raises(Exception):
        config.lora_r = 8  # type: ignore[misc]
    with pytest.raises(ConfigError, match="unknown training profile"):
        make_config("huge")
    assert (config.lora_r, config.lora_dropout, config.lora_target_modules) == (4, 0.3, ("q_proj", "v_proj"))


def test_bad_base_paths(tmp_path):
    from lola.export.base import resolve_base

    with pytest.raises(ConfigError, match="not a Hugging Face checkpoint"):
        resolve_base(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_base(tmp_path)


def test_missing_or_empty_data_fails_before_any_model_loads(tmp_path, tiny_base):
    from lola.export.train import train

    with pytest.raises(DataError, match="not found"):
        train(tmp_path / "nope.csv", tmp_path / "out", make_config("quick"), base=str(tiny_base))
    bad = tmp_path / "bad.csv"
    bad.write_text("headline,clicks\nx,1\n")
    with pytest.raises(DataError, match="missing column"):
        train(bad, tmp_path / "out", make_config("quick"), base=str(tiny_base))
    assert not (tmp_path / "out").exists()


def test_too_strict_impression_filter_is_a_clear_error(tmp_path, tiny_csv, tiny_base):
    from lola.export.train import train

    with pytest.raises(DataError, match="no headline has >= 10000000 impressions"):
        train(tiny_csv, tmp_path / "out", make_config("quick", min_impressions=10_000_000), base=str(tiny_base))


def test_export_needs_a_training_folder(tmp_path):
    from lola.export.onnx_export import export_model

    with pytest.raises(DataError, match="not a training output folder"):
        export_model(tmp_path, tmp_path / "onnx")
    with pytest.raises(ConfigError, match="--quantize must be int8 or fp16"):
        export_model(tmp_path, tmp_path / "onnx", ("int4",))


def test_integrity_errors(tmp_path, exported_tiny):
    from lola.export.serve import OnnxPriorModel

    with pytest.raises(ModelIntegrityError, match="no model_card.json"):
        OnnxPriorModel(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(exported_tiny, copy)
    with (copy / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelIntegrityError, match="differs from the model card"):
        OnnxPriorModel(copy)
    (copy / "model.onnx").unlink()
    with pytest.raises(ModelIntegrityError, match="model.onnx is missing"):
        OnnxPriorModel(copy)
    (copy / "model_card.json").write_text("{not json")
    with pytest.raises(ModelIntegrityError, match="not valid JSON"):
        OnnxPriorModel(copy)
    with pytest.raises(ConfigError, match="provider must be"):
        OnnxPriorModel(exported_tiny, provider="tpu")
    card = json.loads((exported_tiny / "model_card.json").read_text())
    assert "fp16" not in card["variants"]
    with pytest.raises(ModelIntegrityError, match="no fp16 model exported"):
        OnnxPriorModel(exported_tiny, variant="fp16")


def test_predict_rejects_non_strings(exported_tiny):
    from lola.export.serve import OnnxPriorModel

    model = OnnxPriorModel(exported_tiny)
    with pytest.raises(DataError, match="not one string"):
        model.predict("a headline")
    with pytest.raises(DataError, match="text 1 is int"):
        model.predict(["ok", 3])


def test_score_needs_a_headline_column(tmp_path, exported_tiny):
    from lola.export.scoring import score_csv

    src = tmp_path / "in.csv"
    src.write_text("title\nhello\n")
    with pytest.raises(DataError, match="no `headline` column"):
        score_csv(exported_tiny, src, tmp_path / "out.csv")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["priors", "train", "--out", "X", "--data", "/nonexistent.csv"], "--data CSV not found"),
        (["priors", "train", "--out", "X", "--lr", "5"], "learning_rate must be in (0, 1]"),
        (["priors", "export", "--model", "/nonexistent", "--out", "X"], "is not a folder"),
        (["priors", "score", "--model", "X", "--in", "/nonexistent.csv", "--out", "Y"], "--in CSV not found"),
        (["priors", "eval", "--model", "X", "--split", "train"], "--split must be test or tune"),
    ],
)
def test_cli_bad_arguments_are_one_line(argv, fragment):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "lola.cli", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("lola: error:") and fragment in lines[0], proc.stderr


def test_onnx_runtime_runs_the_bytes_that_were_hashed(tmp_path, exported_tiny, monkeypatch):
    """Issue 15: the hash was checked, then ONNX Runtime reopened the file by path, so a
    file swapped in between would be served. Now the verified bytes themselves are loaded."""
    import hashlib

    import onnxruntime as ort

    from lola.export.serve import OnnxPriorModel

    copy = tmp_path / "copy"
    shutil.copytree(exported_tiny, copy)
    card = json.loads((copy / "model_card.json").read_text())
    real = ort.InferenceSession
    seen = []

    def session(model, *args, **kw):
        seen.append(model)
        # swap the file on disk right after the check: must not matter any more
        (copy / "model.onnx").write_bytes(b"not the model that was checked")
        return real(model, *args, **kw)

    monkeypatch.setattr(ort, "InferenceSession", session)
    model = OnnxPriorModel(copy)
    assert isinstance(seen[0], bytes)
    assert hashlib.sha256(seen[0]).hexdigest() == card["files"]["model.onnx"]["sha256"]
    assert model.predict(["a headline"]).shape == (1,)
