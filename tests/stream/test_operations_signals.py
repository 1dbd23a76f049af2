"""A `lola worker` subprocess as the image runs it: the constant-prior bug, and every new metric scraped."""

from __future__ import annotations

import importlib.util
import os
import re
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lola.client import EventProducer, SnapshotReader, decision_request, impression, variant

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def image_model_dir() -> str:
    """LOLA_MODEL_DIR as deploy/Dockerfile sets it for every container of the image."""
    text = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    return re.search(r"LOLA_MODEL_DIR=(\S+)", text).group(1)


def deploy_monitoring():
    spec = importlib.util.spec_from_file_location("_test_monitoring", ROOT / "tests" / "deploy" / "test_monitoring.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def worker_port(w, timeout_s: float = 60.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in w.events():
            if event.get("msg") == "worker started":
                return int(event["metrics_port"])
        assert w.proc.poll() is None, w.log()
        time.sleep(0.2)
    pytest.fail("worker never logged its start: " + w.log())


def scrape(port: int) -> dict[str, list]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {fam.name: fam for fam in text_string_to_metric_families(text)}


def test_constant_prior_flag_wins_over_the_images_model_dir_and_new_metrics_are_exported(stream_settings, worker_procs):
    model_dir = image_model_dir()
    assert not Path(model_dir).exists()  # as in the image without a mounted model
    s = stream_settings()
    w = worker_procs(s, "image-like", env={"LOLA_MODEL_DIR": model_dir}, args=("--constant-prior", "0.03"))
    port = worker_port(w)
    # started without PYTHONMALLOC, `lola worker` ran itself again with glibc's allocator (same pid)
    started = next(e for e in w.events() if e.get("msg") == "worker started")
    assert started["python_malloc"] == os.environ.get("PYTHONMALLOC", "malloc")
    with EventProducer(settings=s) as producer:
        for e in range(4):
            producer.send(variant(f"exp-{e}", "a", "headline a"))
            producer.send(variant(f"exp-{e}", "b", "headline b"))
            for r in range(5):
                producer.send(decision_request(f"exp-{e}-r{r}", f"exp-{e}"))
            producer.send(impression(f"exp-{e}", "a"))
    del producer  # its client now, not at the session's end (no reconnect noise)
    reader = SnapshotReader(settings=s, timeout_s=10)
    deadline = time.monotonic() + 60
    snaps: dict = {}
    while time.monotonic() < deadline:
        snaps = reader.read()
        if len(snaps) == 4 and all(a.get("prior") == pytest.approx(0.03) for sn in snaps.values()
                                   for a in sn["arms"].values()):
            break
        time.sleep(0.3)
    assert w.proc.poll() is None, w.log()
    assert {vid: arm.get("prior") for vid, arm in snaps["exp-0"]["arms"].items()} == {"a": 0.03, "b": 0.03}

    fams: dict = {}

    def value(name: str, sample: str, **labels) -> float:
        return sum(x.value for x in fams[name].samples
                   if x.name == sample and all(x.labels.get(k) == v for k, v in labels.items())) if name in fams else 0.0

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # gauges refresh every second, checkpoints every 0.5 s
        fams = scrape(port)
        if value("lola_experiments", "lola_experiments") == 4 and fams.get("lola_state_bytes") \
                and value("lola_decision_seconds", "lola_decision_seconds_count") == 20 \
                and fams["lola_state_bytes"].samples and fams.get("lola_prior_model_info") \
                and fams["lola_prior_model_info"].samples:
            break
        time.sleep(0.3)

    assert value("lola_decision_seconds", "lola_decision_seconds_count") == 20
    assert value("lola_prior_seconds", "lola_prior_seconds_count") >= 1
    assert value("lola_experiments", "lola_experiments") == 4
    assert value("lola_checkpoint_limit_bytes", "lola_checkpoint_limit_bytes") > 1_000_000
    assert fams["lola_state_bytes"].samples and all(x.value > 0 for x in fams["lola_state_bytes"].samples)
    info = fams["lola_prior_model_info"].samples[0].labels
    assert info["provider"] == "ConstantPriorProvider" and info["model_version"] == "none"
    # every metric the alert rules and the dashboard use is exported by this running worker
    mon = deploy_monitoring()
    missing = mon.referenced_metrics() - mon.exported_names(fams.values())
    assert not missing, sorted(missing)
    assert w.terminate() == 0, w.log()


@pytest.mark.parametrize("value", [0.0, 0.0005, 0.003, 0.0999, 0.1, 2.0, 1e9])
def test_observe_many_exposes_exactly_what_n_plain_observes_do(value):
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from lola.stream.observability import observe_many

    buckets = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
    plain_reg, many_reg = CollectorRegistry(), CollectorRegistry()
    plain = Histogram("h", "h", registry=plain_reg, buckets=buckets)
    many = Histogram("h", "h", registry=many_reg, buckets=buckets)
    for _ in range(7):
        plain.observe(value)
    plain.observe(0.02)
    observe_many(many, value, 7)
    observe_many(many, 0.02, 1)
    def samples(reg):  # every bucket, count and sum; h_created is the histogram's creation time
        return {(x.name, tuple(sorted(x.labels.items()))): x.value
                for fam in text_string_to_metric_families(generate_latest(reg).decode())
                for x in fam.samples if x.name != "h_created"}

    got, want = samples(many_reg), samples(plain_reg)
    assert got.keys() == want.keys()
    for key, value in want.items():  # buckets and count exactly; the sum n*v vs n additions to rounding
        assert got[key] == value if key[0] != "h_sum" else got[key] == pytest.approx(value, rel=1e-12)
