"""`lola priors eval` and `lola bench priors` end to end on the tiny model (shape and sanity, no timing claims)."""

from __future__ import annotations

import numpy as np
import pytest

from lola.errors import ConfigError


def test_eval_reports_every_predictor_on_the_test_split(exported_tiny, tiny_csv):
    from lola.data.upworthy import headline_tests, load_packages, split_packages
    from lola.export.evaluate import evaluate, format_table

    report = evaluate(exported_tiny, tiny_csv, split="test", embed_train_limit=20)
    assert set(report["predictors"]) == {"finetuned", "embedding_ridge", "tfidf_ridge", "week_level", "constant"}
    assert report["split"] == "test" and report["data_matches_training_data"]
    tests = headline_tests(split_packages(load_packages(tiny_csv)[0])["test"])
    constant = report["predictors"]["constant"]
    # a constant prior ranks nothing: top-1 is the random-guess rate, pairwise exactly one half
    assert constant["top1_accuracy"] == pytest.approx(np.mean([1 / t.n_arms for t in tests]))
    if constant["n_significant_pairs"]:
        assert constant["pairwise_accuracy_significant"] == 0.5
    for metrics in report["predictors"].values():
        assert metrics["n_tests"] == len(tests)
        assert np.isfinite(metrics["mae"])
    assert "finetuned" in format_table(report)


def test_bench_priors_compares_engines_on_the_same_inputs(exported_tiny, tiny_csv):
    from lola.bench.priors_bench import run_bench

    report = run_bench(exported_tiny, None, tiny_csv, n=8, batch_size=4, rounds=1)
    assert set(report["results"]) >= {"torch_eager", "ort_fp32", "ort_int8"}
    assert set(report["ratios"]) >= {"ort_fp32_vs_torch_eager", "ort_int8_vs_torch_eager"}
    assert report["agreement"]["ort_fp32_max_abs_diff_ctr_vs_torch"] < 1e-5
    assert report["cuda"].startswith("not measured") or "ort_cuda" in report["results"]


def test_lora_layers_beyond_the_base_are_rejected(tmp_path, tiny_base, tiny_csv):
    from lola.export.config import make_config
    from lola.export.train import train

    with pytest.raises(ConfigError, match="lora_last_layers=5 but the base has 2 layers"):
        train(tiny_csv, tmp_path / "out", make_config("quick", lora_last_layers=5, min_impressions=0,
                                                       train_limit=None), base=str(tiny_base), progress=False)


def test_build_default_trains_exports_and_records_tune_metrics(tmp_path, tiny_base, tiny_csv):
    import json

    from lola.export.config import make_config
    from lola.export.pipeline import build_default, training_dir_for

    out = tmp_path / "ctr-onnx"
    config = make_config("quick", max_steps=2, min_impressions=0, train_limit=None, lora_last_layers=None)
    card = build_default(tiny_csv, out, config, base=str(tiny_base))
    assert training_dir_for(out).joinpath("train_state.json").is_file()
    on_disk = json.loads((out / "model_card.json").read_text())
    assert on_disk["metrics"]["tune"]["n_headlines"] > 0 and card.metrics == on_disk["metrics"]
    assert set(on_disk["variants"]) <= {"fp32", "int8"} and "fp32" in on_disk["variants"]
    # the readout is refitted on every training headline and both heads are scored on tune
    assert on_disk["readout"]["file"] in on_disk["files"]
    assert on_disk["metrics"]["tune_network_head"]["n_headlines"] == on_disk["metrics"]["tune"]["n_headlines"]
    from lola.export.evaluate import evaluate

    report = evaluate(out, tiny_csv, split="test", embedding_baseline=False)
    assert {"finetuned", "finetuned_network_head"} <= set(report["predictors"])
    assert report["details"]["finetuned"]["readout"] == "ridge_on_embedding"
