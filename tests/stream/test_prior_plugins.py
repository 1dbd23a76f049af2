"""Pluggable priors: the HTTP provider against a local server, plug-ins by import path, the choice rules."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from lola.errors import ConfigError
from lola.stream.prior_plugins import HttpPriorProvider, PriorHttpError, load_plugin, provider_from_settings
from lola.stream.priors import ConstantPriorProvider, OnnxModelProvider, PriorService
from lola.stream.shard import PriorRequest
from lola.stream.settings import StreamSettings


class PriorServer:
    """A prior service on 127.0.0.1: answers len(text)/100 per item, or what ``mode`` says."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                items = body["items"]
                code, payload = 200, {"priors": [len(i["text"]) / 100 for i in items]}
                if outer.mode == "slow":
                    time.sleep(1.0)
                elif outer.mode == "500":
                    code = 500
                elif outer.mode == "huge":
                    payload = {"priors": [0.1] * 100_000}
                elif outer.mode == "short":
                    payload = {"priors": payload["priors"][:-1]}
                elif outer.mode == "declines":
                    payload = {"priors": [None if i["variant_id"] == "b" else 0.2 for i in items]}
                raw = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout, size limit): what those tests want

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/priors"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prior_server():
    s = PriorServer()
    yield s
    s.close()


def reqs(*texts: str) -> list[PriorRequest]:
    return [PriorRequest(0, "exp", vid, t, tuple(x for x in texts if x != t)) for vid, t in zip("abc", texts)]


def test_http_provider_posts_ids_texts_and_siblings(prior_server):
    p = HttpPriorProvider(prior_server.url, timeout_s=2.0)
    out = p.predict_requests(reqs("a dog", "the cat sat"))
    assert out.tolist() == [0.05, 0.11]
    assert prior_server.bodies[-1]["items"] == [
        {"experiment_id": "exp", "variant_id": "a", "text": "a dog", "siblings": ["the cat sat"]},
        {"experiment_id": "exp", "variant_id": "b", "text": "the cat sat", "siblings": ["a dog"]}]


@pytest.mark.parametrize("mode, match", [("500", "HTTP 500"), ("huge", "larger than"), ("short", "1 priors for 2"),
                                         ("slow", "unreachable")])
def test_http_provider_errors_are_raised_for_the_prior_thread(prior_server, mode, match):
    prior_server.mode = mode
    p = HttpPriorProvider(prior_server.url, timeout_s=0.3, max_response_bytes=10_000)
    with pytest.raises(PriorHttpError, match=match):
        p.predict_requests(reqs("a dog", "the cat sat"))


def test_http_provider_refused_connection_and_bad_url():
    with pytest.raises(PriorHttpError, match="unreachable"):
        HttpPriorProvider("http://127.0.0.1:1/x", timeout_s=0.5).predict_requests(reqs("a"))
    with pytest.raises(ConfigError, match="http://"):
        HttpPriorProvider("ftp://x")


def wait_results(service: PriorService, n: int, timeout_s: float = 5.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        got += service.results()
        time.sleep(0.01)
    return got


def test_service_with_http_provider_applies_priors_counts_declines_and_times_calls(prior_server):
    prior_server.mode = "declines"
    latencies, fallbacks = [], []
    svc = PriorService(HttpPriorProvider(prior_server.url), timeout_s=5, on_fallback=fallbacks.append,
                       on_latency=latencies.append).start()
    try:
        for r in reqs("x", "y"):
            svc.submit(r)
        got = wait_results(svc, 1)
        deadline = time.monotonic() + 5
        while not fallbacks and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        svc.stop()
    assert [(g.variant_id, g.prior) for g in got] == [("a", 0.2)]
    assert fallbacks == ["declined"]
    assert latencies and all(0 < x < 5 for x in latencies)


def test_a_dead_prior_service_never_blocks_the_caller(prior_server):
    prior_server.mode = "slow"
    fallbacks = []
    svc = PriorService(HttpPriorProvider(prior_server.url, timeout_s=0.2), timeout_s=5,
                       on_fallback=fallbacks.append).start()
    try:
        t0 = time.perf_counter()
        for r in reqs("x", "y", "z"):
            svc.submit(r)
        assert svc.results() == []
        assert time.perf_counter() - t0 < 0.05  # submit and results never wait for the provider
        deadline = time.monotonic() + 5
        while len(fallbacks) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        svc.stop()
    assert fallbacks == ["error"] * 3


# ---------------------------------------------------------------- plug-ins by import path

class SiblingAware:
    """A plug-in prior: the longest headline of an experiment gets the higher prior."""

    def __init__(self, settings) -> None:
        self.settings = settings

    def predict_requests(self, requests):
        return np.array([0.3 if all(len(r.text) >= len(s) for s in r.siblings) else 0.1 for r in requests])


def make_sibling_aware(settings):
    return SiblingAware(settings)


def not_a_provider(settings):
    return object()


def failing_factory(settings):
    raise RuntimeError("no credentials for the prior service")


@pytest.fixture
def plugin_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "lola_test_priors", sys.modules[__name__])
    return "lola_test_priors"


def settings(**kw) -> StreamSettings:
    return StreamSettings(bootstrap_servers="localhost:9092", **kw)


def test_plugin_by_import_path_gets_the_settings_and_sees_siblings(plugin_module):
    s = settings(prior_provider=f"{plugin_module}:make_sibling_aware")
    p = provider_from_settings(s)
    assert isinstance(p, SiblingAware) and p.settings is s
    assert p.predict_requests(reqs("short", "a longer one")).tolist() == [0.1, 0.3]


def test_bad_plugins_are_config_errors(plugin_module):
    with pytest.raises(ConfigError, match="cannot be imported"):
        load_plugin("no_such_module_xyz:f", settings())
    with pytest.raises(ConfigError, match="cannot be imported"):
        load_plugin(f"{plugin_module}:missing", settings())
    with pytest.raises(ConfigError, match="neither"):
        load_plugin(f"{plugin_module}:not_a_provider", settings())
    with pytest.raises(ConfigError, match="failed to start: RuntimeError: no credentials"):
        load_plugin(f"{plugin_module}:failing_factory", settings())
    with pytest.raises(ConfigError, match="package.module:factory"):
        StreamSettings.load(bootstrap_servers="localhost:9092", prior_provider="not a path")


def test_choice_rules(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    # the image's bug: LOLA_MODEL_DIR set by the image must not beat a constant prior
    assert isinstance(provider_from_settings(settings(model_dir=model, constant_prior=0.03)), ConstantPriorProvider)
    onnx = provider_from_settings(settings(model_dir=model, model_variant="int8", model_device="cpu"))
    assert isinstance(onnx, OnnxModelProvider) and (onnx.variant, onnx.device) == ("int8", "cpu")
    assert isinstance(provider_from_settings(settings(model_dir=model, constant_prior=0.03, prior_provider="onnx")),
                      OnnxModelProvider)
    assert provider_from_settings(settings(model_dir=model, prior_provider="none")) is None
    assert provider_from_settings(settings()) is None
    http = provider_from_settings(settings(prior_provider="http", prior_http_url="http://127.0.0.1:9/p",
                                           prior_http_timeout_s=0.5))
    assert isinstance(http, HttpPriorProvider) and http.timeout_s == 0.5
    for kw, match in (({"prior_provider": "http"}, "LOLA_PRIOR_HTTP_URL"), ({"prior_provider": "onnx"}, "LOLA_MODEL_DIR"),
                      ({"prior_provider": "constant"}, "LOLA_CONSTANT_PRIOR")):
        with pytest.raises(ConfigError, match=match):
            provider_from_settings(settings(**kw))


@pytest.mark.model
def test_model_variant_setting_chooses_the_int8_export(exported_tiny):
    p = provider_from_settings(settings(model_dir=exported_tiny, model_variant="int8", model_device="cpu"))
    out = p.predict(["a dog", "a cat"])
    assert out.shape == (2,) and p._model.variant == "int8" and p.model_version is not None


@pytest.mark.parametrize("env, message", [
    ({"LOLA_PRIOR_PROVIDER": "not a path"}, "lola: error: invalid setting prior_provider"),
    ({"LOLA_PRIOR_PROVIDER": "no_such_module_xyz:make"}, "lola: error: prior provider 'no_such_module_xyz:make' cannot"),
    ({"LOLA_PRIOR_PROVIDER": "http"}, "lola: error: LOLA_PRIOR_PROVIDER=http needs LOLA_PRIOR_HTTP_URL"),
])
def test_a_bad_provider_setting_is_one_line_at_worker_start(env, message):
    import os
    import subprocess

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LOLA_", "KAFKA_"))}
    # a closed port: the settings (and the provider) are checked before any broker is contacted
    proc = subprocess.run([sys.executable, "-m", "lola.cli", "worker", "--bootstrap", "127.0.0.1:1"],
                          env={**clean, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[0]]
    assert proc.stderr.startswith(message), proc.stderr
