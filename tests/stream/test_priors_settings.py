"""Pure tests: prior service (timeouts, failures, hot reload) and the settings object."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from lola.errors import ConfigError, ModelIntegrityError
from lola.stream.priors import ConstantPriorProvider, OnnxModelProvider, PriorService
from lola.stream.shard import PriorRequest
from lola.stream.settings import StreamSettings


def req(i: int) -> PriorRequest:
    return PriorRequest(0, "e", f"v{i}", f"text {i}")


def drain(service: PriorService, n: int, timeout: float = 5.0) -> list:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += service.results()
        time.sleep(0.01)
    return got


def test_constant_provider_and_its_validation():
    assert ConstantPriorProvider(0.2).predict(["a", "b"]).tolist() == [0.2, 0.2]
    with pytest.raises(ConfigError):
        ConstantPriorProvider(1.5)


def test_service_delivers_priors_off_thread():
    service = PriorService(ConstantPriorProvider(0.05), timeout_s=5).start()
    try:
        for i in range(5):
            service.submit(req(i))
        got = drain(service, 5)
    finally:
        service.stop()
    assert sorted(r.variant_id for r in got) == [f"v{i}" for i in range(5)]
    assert {r.prior for r in got} == {0.05}


class SlowProvider:
    def predict(self, texts):
        time.sleep(0.5)
        return np.full(len(texts), 0.1)


class BrokenProvider:
    def predict(self, texts):
        raise RuntimeError("model exploded")


class BadRangeProvider:
    def predict(self, texts):
        return np.full(len(texts), 3.0)


@pytest.mark.parametrize("provider,reason", [(SlowProvider(), "timeout"), (BrokenProvider(), "error"),
                                             (BadRangeProvider(), "out_of_range")])
def test_slow_or_failing_provider_gives_no_prior_and_a_fallback(provider, reason):
    seen = []
    service = PriorService(provider, timeout_s=0.2, on_fallback=seen.append).start()
    try:
        t0 = time.perf_counter()
        service.submit(req(1))
        assert time.perf_counter() - t0 < 0.05  # submit never blocks the allocation loop
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        service.stop()
    assert seen == [reason]
    assert service.results() == []


def test_full_queue_is_a_fallback_not_a_stall():
    seen = []
    service = PriorService(SlowProvider(), timeout_s=5, max_pending=1, on_fallback=seen.append)  # not started
    service.submit(req(1))
    service.submit(req(2))
    assert seen == ["queue_full"]


class FakeModel:
    def __init__(self, value):
        self.value = value

    def predict(self, texts):
        return np.full(len(texts), self.value)


def test_onnx_provider_loads_lazily_and_reloads_on_card_change_or_request(tmp_path):
    card = tmp_path / "model_card.json"
    card.write_text(json.dumps({"v": 1}))
    loads = []

    def loader(path):
        value = json.loads(card.read_text())["v"] / 10
        if value > 0.5:
            raise ModelIntegrityError("sha256 mismatch")
        loads.append(value)
        return FakeModel(value)

    provider = OnnxModelProvider(tmp_path, loader=loader)
    assert loads == []  # lazy
    assert provider.predict(["a"]).tolist() == [0.1]
    card.write_text(json.dumps({"v": 2}))
    os.utime(card, (time.time() + 5, time.time() + 5))
    assert provider.predict(["a"]).tolist() == [0.2]
    provider.request_reload()
    provider.predict(["a"])
    assert loads == [0.1, 0.2, 0.2] and provider.reloads == 2
    card.write_text(json.dumps({"v": 9}))  # a broken model: the loaded one keeps serving
    os.utime(card, (time.time() + 10, time.time() + 10))
    assert provider.predict(["a"]).tolist() == [0.2]
    assert provider.reload_failures == 1


def test_onnx_provider_needs_an_existing_dir(tmp_path):
    with pytest.raises(ConfigError, match="model dir not found"):
        OnnxModelProvider(tmp_path / "missing")


def test_settings_from_env_file_and_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "hunter2")
    f = tmp_path / "lola.env"
    f.write_text("LOLA_BATCH_SIZE=123\nLOLA_GROUP_ID=from-file\n")
    s = StreamSettings.load(f, group_id="from-cli")
    assert (s.bootstrap_servers, s.batch_size, s.group_id) == ("kafka:9092", 123, "from-cli")
    assert s.kafka_config()["sasl.password"] == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in json.dumps(s.safe_dict())


def test_env_var_names_cover_every_field():
    names = StreamSettings.env_var_names()
    assert set(names) == set(StreamSettings.model_fields)
    assert names["bootstrap_servers"] == "KAFKA_BOOTSTRAP_SERVERS"
    assert all(n.startswith(("KAFKA_", "LOLA_")) for n in names.values())
    assert len(set(names.values())) == len(names)


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": 0}, "batch_size"),
    ({"bootstrap_servers": "no-port"}, "HOST:PORT"),
    ({"events_topic": "bad topic!"}, "topic name"),
    ({"security_protocol": "TLS"}, "security_protocol"),
])
def test_bad_settings_give_one_clear_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        StreamSettings.load(**kwargs)


def test_missing_settings_file_and_missing_bootstrap(tmp_path, monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    with pytest.raises(ConfigError, match="settings file not found"):
        StreamSettings.load(tmp_path / "nope.env")
    with pytest.raises(ConfigError, match="--bootstrap"):
        StreamSettings.load().require_bootstrap()


def test_requests_queued_while_the_model_loads_still_get_priors(tmp_path):
    (tmp_path / "model_card.json").write_text("{}")

    def slow_loader(path):
        time.sleep(0.6)  # longer than the timeout below
        return FakeModel(0.07)

    service = PriorService(OnnxModelProvider(tmp_path, loader=slow_loader), timeout_s=0.3).start()
    try:
        for i in range(3):
            service.submit(req(i))
        got = drain(service, 3)
    finally:
        service.stop()
    assert [r.prior for r in got] == [0.07] * 3 and service.fallbacks == {}


def test_onnx_provider_sees_a_swapped_model_file_and_backs_off_after_a_failed_reload(tmp_path, monkeypatch):
    """Issue 15: a swap that left model_card.json untouched went unnoticed, and a bad model
    was re-hashed every watch interval."""
    card = tmp_path / "model_card.json"
    card.write_text(json.dumps({"files": {"model.onnx": {"sha256": "x"}}}))
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"good")
    loads = []
    clock = {"t": 1000.0}
    monkeypatch.setattr("lola.stream.priors.time.monotonic", lambda: clock["t"])

    def loader(path):
        loads.append(onnx.read_bytes())
        if onnx.read_bytes() != b"good" and onnx.read_bytes() != b"fixed":
            raise ModelIntegrityError("sha256 mismatch")
        return FakeModel(0.1 if onnx.read_bytes() == b"good" else 0.3)

    provider = OnnxModelProvider(tmp_path, loader=loader)
    assert provider.predict(["a"]).tolist() == [0.1]
    onnx.write_bytes(b"swapped!")  # same card, new file
    assert provider.predict(["a"]).tolist() == [0.1]  # noticed, failed, old model serves
    assert loads[-1] == b"swapped!" and provider.reload_failures == 1
    for _ in range(4):  # watch intervals within the back-off: no reload, no re-hash
        clock["t"] += 1.0
        provider.maybe_reload()
    assert len(loads) == 2
    clock["t"] += 1.5  # 5.5 s after the failure: retried once, fails again, back-off doubles
    provider.maybe_reload()
    assert len(loads) == 3 and provider.reload_failures == 2
    clock["t"] += 9.0
    provider.maybe_reload()
    assert len(loads) == 3
    onnx.write_bytes(b"fixed")
    provider.request_reload()  # SIGHUP skips the back-off
    assert provider.predict(["a"]).tolist() == [0.3] and len(loads) == 4
