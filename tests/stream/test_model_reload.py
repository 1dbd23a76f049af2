"""End to end: a `lola worker` subprocess serves priors from an exported model, reloads it on
SIGHUP, and picks up a rolled-out model (docs/operations/model-rollout.md) for new variants.

Real broker (the session Tansu), real worker process, the tiny exported Llama of tests/conftest.py.
The second model is the same export with a refitted readout, so its priors differ from the
first one's for the same texts.
"""

from __future__ import annotations

import json
import shutil
import signal
import time

import numpy as np
import orjson
import pytest

from lola.stream import kafka as kf

pytestmark = [pytest.mark.broker, pytest.mark.slow]

TEXTS = {"v0": "you won't believe what this dog did", "v1": "science says people love headlines about cats"}


def _register(settings, experiment_id: str) -> None:
    from confluent_kafka import Producer

    producer = Producer(kf.producer_config(settings))
    for vid, text in TEXTS.items():
        kf.produce(producer, settings.events_topic, orjson.dumps(
            {"type": "variant", "experiment_id": experiment_id, "variant_id": vid, "text": text}),
            key=experiment_id.encode())
    producer.flush(10)


def _wait_for_priors(settings, experiment_id: str, worker, timeout_s: float = 90.0) -> dict[str, float]:
    from lola.stream.snapshot import read_snapshots

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        arms = (read_snapshots(settings, timeout_s=5).get(experiment_id) or {}).get("arms") or {}
        priors = {vid: arm.get("prior") for vid, arm in arms.items()}
        if len(priors) == len(TEXTS) and all(p is not None for p in priors.values()):
            return priors
        assert worker.proc.poll() is None, worker.log()
        time.sleep(0.5)
    pytest.fail(f"no priors for {experiment_id} within {timeout_s} s: {worker.log()}")


def _model_loads(worker) -> list[bool]:
    """The ``reload`` flag of every "prior model loaded" line in the worker's JSON log."""
    out = []
    for line in worker.log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") == "prior model loaded":
            out.append(bool(entry.get("reload")))
    return out


def test_sighup_reloads_and_a_rolled_out_model_serves_new_variants(tmp_path, exported_tiny, tiny_csv, stream_settings,
                                                       worker_procs):
    from lola.export.readout import fit_readout
    from lola.export.serve import OnnxPriorModel

    live = tmp_path / "live"
    shutil.copytree(exported_tiny, live)
    second = tmp_path / "second"
    shutil.copytree(exported_tiny, second)
    fit_readout(second, tiny_csv)
    texts = list(TEXTS.values())
    first_priors = OnnxPriorModel(live).predict(texts)
    second_priors = OnnxPriorModel(second).predict(texts)
    assert np.abs(first_priors - second_priors).max() > 1e-6  # the swap is observable

    # The idle card watcher is slowed to an hour: reloads below come from SIGHUP or from a prediction.
    settings = stream_settings(model_dir=live, model_watch_interval_s=3600.0, prior_timeout_s=60.0)
    kf.ensure_topics(settings)
    worker = worker_procs(settings)
    _register(settings, "e-before")
    before = _wait_for_priors(settings, "e-before", worker)
    np.testing.assert_allclose([before[v] for v in TEXTS], first_priors, rtol=0, atol=1e-9)

    assert _model_loads(worker) == [False]

    # SIGHUP with nothing changed: the next prediction reloads (and serves the same priors).
    worker.proc.send_signal(signal.SIGHUP)
    _register(settings, "e-hup")
    hup = _wait_for_priors(settings, "e-hup", worker)
    np.testing.assert_allclose([hup[v] for v in TEXTS], first_priors, rtol=0, atol=1e-9)
    assert _model_loads(worker) == [False, True]

    # Roll out the second model: the folder's files, the card last; no signal needed.
    for name in ("readout.json", "model.onnx", "model.int8.onnx", "tokenizer.json", "model_card.json"):
        shutil.copy2(second / name, live / name)
    _register(settings, "e-after")
    after = _wait_for_priors(settings, "e-after", worker)
    np.testing.assert_allclose([after[v] for v in TEXTS], second_priors, rtol=0, atol=1e-9)
    # arms that already had a prior keep it
    again = _wait_for_priors(settings, "e-before", worker)
    assert again == before
    assert _model_loads(worker) == [False, True, True]
    assert worker.terminate() == 0
