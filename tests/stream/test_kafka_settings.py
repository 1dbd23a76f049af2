"""Kafka settings as users set them: pass-through librdkafka properties, OAUTHBEARER, compression, replicas."""

from __future__ import annotations

import pytest

from lola.errors import ConfigError
from lola.stream import kafka as kf
from lola.stream.settings import StreamSettings

BOOT = {"bootstrap_servers": "localhost:9092"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(("LOLA_", "KAFKA_")):
            monkeypatch.delenv(name)


def test_lola_kafka_variables_become_librdkafka_properties(monkeypatch):
    monkeypatch.setenv("LOLA_KAFKA_SOCKET_KEEPALIVE_ENABLE", "true")
    monkeypatch.setenv("LOLA_KAFKA_CLIENT_RACK", "eu-west-1a")
    conf = StreamSettings.load(**BOOT).kafka_config()
    assert conf["socket.keepalive.enable"] == "true" and conf["client.rack"] == "eu-west-1a"
    # they reach every client the worker builds, under the worker's own settings
    prod = kf.producer_config(StreamSettings.load(**BOOT))
    assert prod["socket.keepalive.enable"] == "true" and prod["partitioner"] == kf.PARTITIONER


def test_settings_file_and_json_object_merge_with_the_environment_winning(tmp_path, monkeypatch):
    f = tmp_path / "lola.env"
    f.write_text('LOLA_KAFKA_METADATA_MAX_AGE_MS=60000\nLOLA_KAFKA_CLIENT_RACK=file\n'
                 'LOLA_KAFKA_PROPERTIES={"statistics.interval.ms": 5000, "client.rack": "json"}\n')
    monkeypatch.setenv("LOLA_KAFKA_CLIENT_RACK", "env")
    conf = StreamSettings.load(f, **BOOT).kafka_config()
    assert conf["metadata.max.age.ms"] == "60000"
    assert conf["statistics.interval.ms"] == "5000"
    assert conf["client.rack"] == "env"


def test_a_malformed_property_is_a_config_error(monkeypatch):
    with pytest.raises(ConfigError, match="kafka_properties"):
        StreamSettings.load(kafka_properties={"Not A Property": "1"}, **BOOT)
    monkeypatch.setenv("LOLA_KAFKA_PROPERTIES", "[1, 2]")
    with pytest.raises(ConfigError, match="object"):
        StreamSettings.load(**BOOT)


def test_a_property_librdkafka_does_not_know_is_a_config_error_not_a_traceback(monkeypatch):
    monkeypatch.setenv("LOLA_KAFKA_NO_SUCH_THING", "1")
    with pytest.raises(ConfigError, match="no.such.thing"):
        kf.admin_client(StreamSettings.load(**BOOT))


def test_oauthbearer_oidc_settings_and_secrets_masked(monkeypatch):
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "OAUTHBEARER")
    monkeypatch.setenv("KAFKA_SASL_OAUTHBEARER_METHOD", "oidc")
    monkeypatch.setenv("KAFKA_SASL_OAUTHBEARER_CLIENT_ID", "lola")
    monkeypatch.setenv("KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET", "s3cret")
    monkeypatch.setenv("KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL", "https://idp.example/token")
    monkeypatch.setenv("KAFKA_SASL_OAUTHBEARER_SCOPE", "kafka")
    monkeypatch.setenv("LOLA_KAFKA_SSL_KEY_PASSWORD", "also-secret")
    s = StreamSettings.load(**BOOT)
    conf = s.kafka_config()
    assert conf["sasl.mechanism"] == "OAUTHBEARER" and conf["sasl.oauthbearer.method"] == "oidc"
    assert conf["sasl.oauthbearer.client.secret"] == "s3cret"
    assert conf["sasl.oauthbearer.token.endpoint.url"] == "https://idp.example/token"
    assert conf["sasl.oauthbearer.scope"] == "kafka" and conf["sasl.oauthbearer.client.id"] == "lola"
    text = str(s.safe_dict())
    assert "s3cret" not in text and "also-secret" not in text
    kf.admin_client(s)  # librdkafka accepts the whole OIDC configuration


def test_compression_default_is_gzip_and_is_checked():
    assert kf.producer_config(StreamSettings.load(**BOOT))["compression.type"] == "gzip"
    assert kf.producer_config(StreamSettings.load(compression="lz4", **BOOT))["compression.type"] == "lz4"
    with pytest.raises(ConfigError, match="compression"):
        StreamSettings.load(compression="brotli", **BOOT)


def test_replication_factor_defaults_to_the_cluster_default():
    assert StreamSettings.load(**BOOT).replication_factor == -1
    assert StreamSettings.load(replication_factor=3, **BOOT).replication_factor == 3
    with pytest.raises(ConfigError, match="replication_factor"):
        StreamSettings.load(replication_factor=0, **BOOT)


@pytest.mark.broker
def test_topics_created_with_the_cluster_default_replicas_and_pass_through_properties(stream_settings):
    s = stream_settings(kafka_properties={"socket.keepalive.enable": "true", "client.rack": "r1"})
    counts = kf.ensure_topics(s)
    assert counts[s.events_topic] == 4 and counts[s.state_topic] == 4


@pytest.mark.broker
def test_pre_created_topics_are_used_and_missing_ones_named(stream_settings):
    s = stream_settings(create_topics=False)
    with pytest.raises(ConfigError, match="LOLA_CREATE_TOPICS is false"):
        kf.ensure_topics(s)
    kf.ensure_topics(stream_settings(**{k: getattr(s, k) for k in ("events_topic", "decisions_topic", "snapshots_topic",
                                                                   "state_topic", "deadletter_topic", "inflight_topic",
                                                                   "group_id")}))
    assert kf.ensure_topics(s)[s.events_topic] == 4  # all there now: nothing to create


def test_an_unknown_default_policy_is_one_clear_line_at_load(monkeypatch):
    monkeypatch.setenv("LOLA_DEFAULT_POLICY", "llm2cub")
    with pytest.raises(ConfigError) as info:
        StreamSettings.load()
    message = str(info.value)
    assert message.startswith("invalid setting default_policy: Input should be 'llm2ucb', 'ucb'")
    assert "'llm_bai'" in message and len(message.splitlines()) == 1
    monkeypatch.setenv("LOLA_DEFAULT_POLICY", "ts")
    assert StreamSettings.load().default_policy == "ts"
