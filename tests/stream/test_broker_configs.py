"""Named broker configurations (lola broker --config, lola bench soak --broker-config)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

import pytest

from lola.errors import ConfigError
from lola.stream import kafka as kf
from lola.stream.broker import BROKER_CONFIGS, EmbeddedBroker, broker_config
from lola.stream.settings import StreamSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(("LOLA_", "KAFKA_")):
            monkeypatch.delenv(name)


def test_unknown_configuration_is_a_config_error_naming_the_known_ones():
    with pytest.raises(ConfigError, match="memory-batched"):
        broker_config("kafka")
    with pytest.raises(ConfigError, match="unknown broker configuration"):
        EmbeddedBroker(config="postgres")


@pytest.mark.parametrize("name", sorted(BROKER_CONFIGS))
def test_client_settings_are_settings_fields_and_reach_the_clients(name):
    cfg = broker_config(name)
    assert set(cfg.client_settings) <= set(StreamSettings.model_fields)
    s = StreamSettings.load(bootstrap_servers="localhost:9092", **cfg.client_settings)
    assert kf.producer_config(s)["linger.ms"] == s.producer_linger_ms
    assert kf.consumer_config(s)["fetch.wait.max.ms"] == s.fetch_wait_max_ms
    # the worker subprocess reads them back from its environment
    env_names = StreamSettings.env_var_names()
    assert {env_names[k]: str(v) for k, v in cfg.client_settings.items()}.items() <= s.as_env().items()


def test_batched_configuration_batches_and_default_keeps_the_low_latency_settings():
    assert broker_config("memory").client_settings == {}
    s = StreamSettings.load(bootstrap_servers="localhost:9092")
    assert (s.producer_linger_ms, s.fetch_wait_max_ms) == (2, 5)
    assert broker_config("memory-batched").client_settings["producer_linger_ms"] >= 50


@pytest.mark.broker
def test_memory_batched_broker_round_trips_a_record_with_its_client_settings():
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import NewTopic

    cfg = broker_config("memory-batched")
    with EmbeddedBroker(config=cfg.name) as b:
        assert b.config.describe()["broker"].startswith("tansu ")
        s = StreamSettings.load(bootstrap_servers=b.bootstrap, **cfg.client_settings)
        topic = f"cfg-{uuid.uuid4().hex[:6]}"
        admin = kf.admin_client(s)
        for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
            future.result(30)
        producer = Producer(kf.producer_config(s))
        kf.produce(producer, topic, b'{"hello": 1}', key=b"k")
        assert producer.flush(30) == 0
        consumer = Consumer(kf.consumer_config(s, f"g-{topic}"))
        consumer.assign([TopicPartition(topic, 0, 0)])
        got, deadline = [], time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            got = [m for m in consumer.consume(10, 0.5) if m.error() is None]
        consumer.close()
    assert [(m.key(), m.value()) for m in got] == [(b"k", b'{"hello": 1}')]


@pytest.mark.broker
def test_lola_broker_config_prints_the_client_settings_to_export():
    proc = subprocess.Popen([sys.executable, "-m", "lola.cli", "broker", "--config", "memory-batched"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = [proc.stdout.readline().strip() for _ in range(3)]
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert lines[0].startswith("bootstrap=127.0.0.1:"), lines
    assert set(lines[1:]) == {"LOLA_PRODUCER_LINGER_MS=100", "LOLA_FETCH_WAIT_MAX_MS=100"}
    assert rc == 0
