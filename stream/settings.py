"""The one typed settings object of the stream worker, load generator and tools.

Values come from (highest priority first): keyword arguments (CLI flags), environment
variables, an optional env-style settings file (``LOLA_SETTINGS_FILE`` or
``--settings FILE``), then defaults.

Env names: ``KAFKA_BOOTSTRAP_SERVERS``, ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*``,
``KAFKA_SSL_*`` for the broker connection (the names Kafka tooling users expect), and
``LOLA_*`` for everything else. :func:`StreamSettings.env_var_names` lists them all, so
deploy manifests can be checked against this class.

Secrets (SASL password, SSL key password) are :class:`pydantic.SecretStr`: they print
as ``**********`` and :meth:`StreamSettings.safe_dict` never reveals them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lola.data.worker_defaults import WORKER_DEFAULTS
from lola.errors import ConfigError
from lola.kernels.policy_table import POLICIES
from lola.stream.features import MAX_FEATURE_DIM

POLICY_DEFAULT = "llm2ucb"
#: ``LOLA_KAFKA_<NAME>=value`` sets the librdkafka property ``<name>`` (``_`` -> ``.``, lower case).
KAFKA_ENV_PREFIX = "LOLA_KAFKA_"
PROPERTY_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")


def _file_values(settings_file: str | Path | None) -> dict[str, str]:
    if settings_file is None:
        return {}
    from dotenv import dotenv_values  # pydantic-settings' own env-file reader

    return {k: v for k, v in dotenv_values(settings_file).items() if v is not None}


def _properties_object(raw: str) -> dict[str, Any]:
    """LOLA_KAFKA_PROPERTIES text -> dict; ValueError unless it is a JSON object."""
    import json

    try:
        value = json.loads(raw) if raw.strip() else {}
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object of librdkafka properties")
    return value


def _json_properties(settings_file: str | Path | None) -> dict[str, Any]:
    """LOLA_KAFKA_PROPERTIES (JSON) from the environment or file, so per-variable ones merge into it."""
    raw = os.environ.get("LOLA_KAFKA_PROPERTIES", _file_values(settings_file).get("LOLA_KAFKA_PROPERTIES", ""))
    try:
        return _properties_object(raw)
    except ValueError as exc:
        raise ConfigError(f"invalid setting LOLA_KAFKA_PROPERTIES: {exc}") from None


def kafka_env_properties(settings_file: str | Path | None = None) -> dict[str, str]:
    """librdkafka properties from ``LOLA_KAFKA_*`` variables (settings file first, environment wins)."""
    out: dict[str, str] = {}
    for source in (_file_values(settings_file), os.environ):
        for name, value in source.items():
            if name.startswith(KAFKA_ENV_PREFIX) and name != "LOLA_KAFKA_PROPERTIES":
                out[name[len(KAFKA_ENV_PREFIX):].lower().replace("_", ".")] = value
    return out




class StreamSettings(BaseSettings):
    """Every setting of ``lola worker`` / ``loadgen`` / ``snapshot`` / ``dlq``."""

    model_config = SettingsConfigDict(
        env_file=None,
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    # --- broker connection (librdkafka) ---------------------------------------------
    bootstrap_servers: str = Field("", validation_alias=AliasChoices("bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS"),
                                   description="host:port[,host:port]; empty = start nothing, error")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", validation_alias=AliasChoices("security_protocol", "KAFKA_SECURITY_PROTOCOL"))
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None = Field(
        None, validation_alias=AliasChoices("sasl_mechanism", "KAFKA_SASL_MECHANISM"))
    sasl_username: str | None = Field(None, validation_alias=AliasChoices("sasl_username", "KAFKA_SASL_USERNAME"))
    sasl_password: SecretStr | None = Field(None, validation_alias=AliasChoices("sasl_password", "KAFKA_SASL_PASSWORD"))
    ssl_ca_location: str | None = Field(None, validation_alias=AliasChoices("ssl_ca_location", "KAFKA_SSL_CA_LOCATION"))
    ssl_certificate_location: str | None = Field(
        None, validation_alias=AliasChoices("ssl_certificate_location", "KAFKA_SSL_CERTIFICATE_LOCATION"))
    ssl_key_location: str | None = Field(None, validation_alias=AliasChoices("ssl_key_location", "KAFKA_SSL_KEY_LOCATION"))
    ssl_key_password: SecretStr | None = Field(
        None, validation_alias=AliasChoices("ssl_key_password", "KAFKA_SSL_KEY_PASSWORD"))
    # OAUTHBEARER with librdkafka's built-in OIDC client-credentials flow (docs/kafka.md).
    sasl_oauthbearer_method: Literal["default", "oidc"] | None = Field(
        None, validation_alias=AliasChoices("sasl_oauthbearer_method", "KAFKA_SASL_OAUTHBEARER_METHOD"),
        description="oidc = fetch tokens from the token endpoint (client credentials)")
    sasl_oauthbearer_client_id: str | None = Field(
        None, validation_alias=AliasChoices("sasl_oauthbearer_client_id", "KAFKA_SASL_OAUTHBEARER_CLIENT_ID"))
    sasl_oauthbearer_client_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("sasl_oauthbearer_client_secret", "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET"))
    sasl_oauthbearer_token_endpoint_url: str | None = Field(
        None, validation_alias=AliasChoices("sasl_oauthbearer_token_endpoint_url",
                                            "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL"))
    sasl_oauthbearer_scope: str | None = Field(
        None, validation_alias=AliasChoices("sasl_oauthbearer_scope", "KAFKA_SASL_OAUTHBEARER_SCOPE"))
    sasl_oauthbearer_extensions: str | None = Field(
        None, validation_alias=AliasChoices("sasl_oauthbearer_extensions", "KAFKA_SASL_OAUTHBEARER_EXTENSIONS"),
        description="comma-separated key=value pairs (e.g. logicalCluster=lkc-123,identityPoolId=pool-1)")
    kafka_properties: dict[str, str] = Field(
        default_factory=dict, validation_alias=AliasChoices("kafka_properties", "LOLA_KAFKA_PROPERTIES"),
        description="extra librdkafka properties for every client, as a JSON object; also set one per "
                    "variable: LOLA_KAFKA_SOCKET_KEEPALIVE_ENABLE=true -> socket.keepalive.enable (docs/kafka.md)")
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "gzip", validation_alias=AliasChoices("compression", "LOLA_COMPRESSION"),
        description="compression.type of everything the worker produces; gzip is read by every Kafka client "
                    "(kafkajs cannot read lz4, snappy or zstd without a plug-in; docs/clients.md)")
    producer_linger_ms: int = Field(
        2, ge=0, le=10_000, validation_alias=AliasChoices("producer_linger_ms", "LOLA_PRODUCER_LINGER_MS"),
        description="linger.ms of the worker's producers (and lola bench soak's load); Tansu's memory "
                    "storage slows with the number of stored batches, so long runs on it use 100 "
                    "(lola broker --config memory-batched, docs/operations/checkpoints.md)")

    # --- topics ------------------------------------------------------------------------
    events_topic: str = Field("lola.events", validation_alias=AliasChoices("events_topic", "LOLA_EVENTS_TOPIC"))
    decisions_topic: str = Field("lola.decisions", validation_alias=AliasChoices("decisions_topic", "LOLA_DECISIONS_TOPIC"))
    snapshots_topic: str = Field("lola.snapshots", validation_alias=AliasChoices("snapshots_topic", "LOLA_SNAPSHOTS_TOPIC"))
    state_topic: str | None = Field(None, validation_alias=AliasChoices("state_topic", "LOLA_STATE_TOPIC"),
                                    description="checkpoint topic; default lola.state.<group_id>, one per consumer "
                                                "group. Set it to share a topic between groups on purpose")
    inflight_topic: str | None = Field(None, validation_alias=AliasChoices("inflight_topic", "LOLA_INFLIGHT_TOPIC"),
                                       description="crash-loop breaker's in-flight markers (compacted); default "
                                                   "lola.inflight.<group_id>")
    legacy_state_topic: str = Field("lola.state", validation_alias=AliasChoices("legacy_state_topic",
                                                                               "LOLA_LEGACY_STATE_TOPIC"),
                                    description="upgrade path: the shared state topic of builds before the "
                                                "per-group default, read for this group's checkpoints when its "
                                                "own topic has none for a partition; empty = never")
    deadletter_topic: str = Field("lola.deadletter", validation_alias=AliasChoices("deadletter_topic", "LOLA_DEADLETTER_TOPIC"))
    partitions: int = Field(4, ge=1, le=1024, validation_alias=AliasChoices("partitions", "LOLA_PARTITIONS"),
                            description="partitions of the events topic when the worker creates it")
    replication_factor: int = Field(-1, ge=-1, le=16,
                                    validation_alias=AliasChoices("replication_factor", "LOLA_REPLICATION_FACTOR"),
                                    description="replicas of the topics the worker creates; -1 = the cluster's "
                                                "default.replication.factor (Kafka >= 2.4)")
    create_topics: bool = Field(True, validation_alias=AliasChoices("create_topics", "LOLA_CREATE_TOPICS"))

    # --- worker ------------------------------------------------------------------------
    group_id: str = Field("lola-worker", validation_alias=AliasChoices("group_id", "LOLA_GROUP_ID"))
    session_timeout_ms: int = Field(10_000, ge=1000, le=300_000,
                                    validation_alias=AliasChoices("session_timeout_ms", "LOLA_SESSION_TIMEOUT_MS"),
                                    description="consumer group session timeout: how fast a dead worker's partitions move")
    batch_size: int = Field(5000, ge=1, le=1_000_000, validation_alias=AliasChoices("batch_size", "LOLA_BATCH_SIZE"))
    fetch_wait_max_ms: int = Field(5, ge=1, le=10_000,
                                   validation_alias=AliasChoices("fetch_wait_max_ms", "LOLA_FETCH_WAIT_MAX_MS"),
                                   description="broker-side fetch wait; Tansu answers only when it expires, so it is "
                                               "a floor on decision latency")
    poll_timeout_s: float = Field(0.005, gt=0, le=10, validation_alias=AliasChoices("poll_timeout_s", "LOLA_POLL_TIMEOUT_S"))
    checkpoint_interval_s: float = Field(1.0, gt=0, le=3600,
                                         validation_alias=AliasChoices("checkpoint_interval_s", "LOLA_CHECKPOINT_INTERVAL_S"))
    checkpoint_deltas: bool = Field(True, validation_alias=AliasChoices("checkpoint_deltas", "LOLA_CHECKPOINT_DELTAS"),
                                    description="incremental checkpoints: between full base records, write only what "
                                                "changed (docs/operations/checkpoints.md); false: every round in full")
    checkpoint_delta_max_chain: int = Field(
        50, ge=1, le=1000, validation_alias=AliasChoices("checkpoint_delta_max_chain", "LOLA_CHECKPOINT_DELTA_MAX_CHAIN"),
        description="most deltas after a base before a new base (also: a new base once the deltas exceed half the "
                    "base's bytes); a restore applies at most this many (a longer chain: its first ones, "
                    "then replays the events after them)")
    snapshot_interval_s: float = Field(1.0, gt=0, le=3600,
                                       validation_alias=AliasChoices("snapshot_interval_s", "LOLA_SNAPSHOT_INTERVAL_S"))
    # Snapshot statistics and the winner rule (lola.stream.stats, docs/reports.md).
    stats_interval_s: float = Field(10.0, ge=0, le=3600, validation_alias=AliasChoices("stats_interval_s", "LOLA_STATS_INTERVAL_S"),
                                    description="an experiment's snapshot statistics are recomputed at most this often")
    winner_p_best: float = Field(0.999, gt=0.5, lt=1, validation_alias=AliasChoices("winner_p_best", "LOLA_WINNER_P_BEST"),
                                 description="winner rule: data-only P(best) at least this")
    winner_max_loss: float = Field(0.0025, gt=0, le=1, validation_alias=AliasChoices("winner_max_loss", "LOLA_WINNER_MAX_LOSS"),
                                   description="winner rule: expected loss at most this times the arm's posterior mean")
    winner_min_impressions: float = Field(1000.0, ge=0, le=1e12,
                                          validation_alias=AliasChoices("winner_min_impressions", "LOLA_WINNER_MIN_IMPRESSIONS"),
                                          description="winner rule: impressions every active arm needs first")
    edge_method: Literal["hallucinate", "matching"] = Field(
        "hallucinate", validation_alias=AliasChoices("edge_method", "LOLA_EDGE_METHOD"),
        description="how a snapshot's edge allocation covers the interval until the next snapshot (docs/serving.md)")
    serve_api_keys: SecretStr | None = Field(
        None, validation_alias=AliasChoices("serve_api_keys", "LOLA_SERVE_API_KEYS"),
        description="lola serve: comma-separated API keys (header X-API-Key); required to start it")
    serve_host: str = Field("0.0.0.0", validation_alias=AliasChoices("serve_host", "LOLA_SERVE_HOST"))
    serve_port: int = Field(8080, ge=0, le=65_535, validation_alias=AliasChoices("serve_port", "LOLA_SERVE_PORT"))
    serve_rate_per_s: float = Field(10_000.0, gt=0, le=1e7,
                                    validation_alias=AliasChoices("serve_rate_per_s", "LOLA_SERVE_RATE_PER_S"),
                                    description="lola serve: requests per second per API key (token bucket); 429 above")
    serve_rate_burst: int = Field(2_000, ge=1, le=10_000_000,
                                  validation_alias=AliasChoices("serve_rate_burst", "LOLA_SERVE_RATE_BURST"),
                                  description="lola serve: token bucket size per API key")
    serve_issued_max: int = Field(1_000_000, ge=1, le=100_000_000,
                                  validation_alias=AliasChoices("serve_issued_max", "LOLA_SERVE_ISSUED_MAX"),
                                  description="lola serve: event ids remembered for /impression and /reward (oldest "
                                              "forgotten first; a reward for a forgotten id is refused)")
    edge_valid_s: float = Field(30.0, gt=0, le=86_400, validation_alias=AliasChoices("edge_valid_s", "LOLA_EDGE_VALID_S"),
                                description="an edge allocation is served this long after its snapshot; then the "
                                            "snapshot's fallback split (docs/serving.md)")
    dedup_window: int = Field(100_000, ge=0, le=50_000_000, validation_alias=AliasChoices("dedup_window", "LOLA_DEDUP_WINDOW"),
                              description="request ids remembered per partition (retried decision requests, "
                                          "click attribution by request_id)")
    dedup_window_s: float = Field(3600.0, gt=0, le=7 * 86_400,
                                  validation_alias=AliasChoices("dedup_window_s", "LOLA_DEDUP_WINDOW_S"),
                                  description="event time for which (experiment, type, event_id) is remembered; "
                                              "older events are dead-lettered stale")
    dedup_budget_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=1 << 34,
                                    validation_alias=AliasChoices("dedup_budget_bytes", "LOLA_DEDUP_BUDGET_BYTES"),
                                    description="memory of the de-duplication window per owned partition, allocated "
                                                "in full when the partition is assigned (one entry per 44 bytes at "
                                                "most); when it binds the window shrinks "
                                                "(lola_dedup_budget_evictions_total)")
    malloc_mmap_threshold_bytes: int = Field(
        1024 * 1024, ge=0, le=32 * 1024 * 1024,
        validation_alias=AliasChoices("malloc_mmap_threshold_bytes", "LOLA_MALLOC_MMAP_THRESHOLD_BYTES"),
        description="glibc: buffers of at least this size are returned to the OS when freed (lola worker; "
                    "0 = glibc's dynamic default, under which RSS keeps the high-water mark of checkpoint "
                    "serialisation)")
    duplicate_dead_letter_every: int = Field(1000, ge=0, le=1_000_000_000,
                                             validation_alias=AliasChoices("duplicate_dead_letter_every",
                                                                           "LOLA_DUPLICATE_DEAD_LETTER_EVERY"),
                                             description="one duplicate in N is also dead-lettered (0: none)")
    max_clicks_per_impression: int = Field(1, ge=1, le=1_000_000,
                                           validation_alias=AliasChoices("max_clicks_per_impression",
                                                                         "LOLA_MAX_CLICKS_PER_IMPRESSION"),
                                           description="clicks counted per remembered impression_id (click_cap)")
    max_experiments_per_partition: int = Field(20_000, ge=1, le=10_000_000,
                                               validation_alias=AliasChoices("max_experiments_per_partition",
                                                                             "LOLA_MAX_EXPERIMENTS_PER_PARTITION"),
                                               description="live (not yet evicted) experiments per partition")
    max_arms_per_experiment: int = Field(256, ge=1, le=65_536,
                                         validation_alias=AliasChoices("max_arms_per_experiment",
                                                                       "LOLA_MAX_ARMS_PER_EXPERIMENT"),
                                         description="variants per experiment, retired ones until evicted")
    attribution_window_s: float = Field(86_400.0, gt=0, le=1e9, validation_alias=AliasChoices("attribution_window_s", "LOLA_ATTRIBUTION_WINDOW_S"))
    max_message_bytes: int = Field(65_536, ge=256, le=16_777_216,
                                   validation_alias=AliasChoices("max_message_bytes", "LOLA_MAX_MESSAGE_BYTES"))
    # One of the policy table's names, checked at load: a bad default would dead-letter every new experiment.
    default_policy: Literal[POLICIES] = Field(  # type: ignore[valid-type]
        POLICY_DEFAULT, validation_alias=AliasChoices("default_policy", "LOLA_DEFAULT_POLICY"))
    # The replay's one LOLA setting for every horizon, from lola/data/worker_defaults.json (see lola.data.worker_defaults).
    default_alpha: float = Field(WORKER_DEFAULTS["alpha"], ge=0, le=1e6,
                                 validation_alias=AliasChoices("default_alpha", "LOLA_DEFAULT_ALPHA"),
                                 description="UCB width of a new experiment (LOLA replay, one setting for all horizons)")
    default_n_aux: float = Field(WORKER_DEFAULTS["n_aux"], ge=0, le=1e12,
                                 validation_alias=AliasChoices("default_n_aux", "LOLA_DEFAULT_N_AUX"),
                                 description="prior pseudo-impressions of a new experiment, tuned for the default model; "
                                             "lower it for a constant prior or a weaker model")
    # 0 by default: d > 0 gives every experiment of a shard A^-1 and feature rows, which
    # more than doubles state and checkpoints (docs/stream.md) whether or not it runs LinUCB.
    feature_dim: int = Field(0, ge=0, le=MAX_FEATURE_DIM,
                             validation_alias=AliasChoices("feature_dim", "LOLA_FEATURE_DIM"),
                             description="length d of the arm features of linucb/llm_linucb experiments (an intercept "
                                         "and a hashed bag of words of the variant text, lola.stream.features); "
                                         "0 = those policies are invalid_settings; a restored shard keeps the d "
                                         "of its checkpoint")
    context_user_dim: int = Field(8, ge=2, le=16,
                                  validation_alias=AliasChoices("context_user_dim", "LOLA_CONTEXT_USER_DIM"),
                                  description="width of a contextual experiment's user features u (intercept, scaled "
                                              "numeric fields, hashed categorical fields; docs/contextual.md)")
    context_arm_dim: int = Field(4, ge=1, le=4,
                                 validation_alias=AliasChoices("context_arm_dim", "LOLA_CONTEXT_ARM_DIM"),
                                 description="width of a contextual experiment's arm text features a; the model's "
                                             "features are a (x) u, d = arm_dim * user_dim")
    join_window_s: float = Field(600.0, gt=0, le=86_400,
                                 validation_alias=AliasChoices("join_window_s", "LOLA_JOIN_WINDOW_S"),
                                 description="how long a contextual decision's featurized context waits for its "
                                             "impression/click (then it counts as never joined)")
    join_window_bytes: int = Field(64 * 2**20, ge=2**16, le=2**34,
                                   validation_alias=AliasChoices("join_window_bytes", "LOLA_JOIN_WINDOW_BYTES"),
                                   description="byte budget of the join window per partition (oldest entries leave first)")
    warm_start_dir: Path | None = Field(None, validation_alias=AliasChoices("warm_start_dir", "LOLA_WARM_START_DIR"),
                                           description="folder of LinUCB warm starts (NAME.npz from `lola experiments "
                                                       "warm-start`), loaded at start; a variant setting "
                                                       "warm_start=NAME applies one to a new experiment")
    seed: int = Field(0, ge=0, lt=2**63, validation_alias=AliasChoices("seed", "LOLA_SEED"))
    max_future_skew_s: float = Field(300.0, ge=0, le=31_536_000,
                                     validation_alias=AliasChoices("max_future_skew_s", "LOLA_MAX_FUTURE_SKEW_S"),
                                     description="an event ts further ahead of its Kafka timestamp is a future_ts "
                                                 "dead letter; old ts stay legal (backfills)")
    # --- fault tolerance (docs/operations/fault-tolerance.md) ----------------------------
    crash_breaker: bool = Field(True, validation_alias=AliasChoices("crash_breaker", "LOLA_CRASH_BREAKER"),
                                description="write durable in-flight markers before applying records (one produce "
                                            "round trip per batch); false turns the crash-loop breaker off")
    poison_after_deaths: int = Field(3, ge=1, le=100,
                                     validation_alias=AliasChoices("poison_after_deaths", "LOLA_POISON_AFTER_DEATHS"),
                                     description="a record in flight when the process died this many times is "
                                                 "dead-lettered as poison on restart")
    offset_reset_policy: Literal["earliest", "latest", "fail"] = Field(
        "earliest", validation_alias=AliasChoices("offset_reset_policy", "LOLA_OFFSET_RESET_POLICY"),
        description="a checkpoint beyond its partition's end (topic recreated): keep its state and re-read the "
                    "partition from its start (earliest), keep its state and skip to the end (latest), or stop (fail)")
    state_max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024,
                                         validation_alias=AliasChoices("state_max_message_bytes",
                                                                       "LOLA_STATE_MAX_MESSAGE_BYTES"),
                                         description="max.message.bytes of a state topic the worker creates; the "
                                                     "limit in force is read from the broker")
    # --- priors --------------------------------------------------------------------------
    model_dir: Path | None = Field(None, validation_alias=AliasChoices("model_dir", "LOLA_MODEL_DIR"),
                                   description="ONNX prior model folder (model_card.json); none = constant prior")
    constant_prior: float | None = Field(None, ge=0, le=1, validation_alias=AliasChoices("constant_prior", "LOLA_CONSTANT_PRIOR"),
                                         description="prior CTR given to every new variant; when set it wins over "
                                                     "LOLA_MODEL_DIR (the image sets that one by default)")
    compliance_policy: str | None = Field(
        None, max_length=4096, validation_alias=AliasChoices("compliance_policy", "LOLA_COMPLIANCE_POLICY"),
        description="the variant gate's compliance policy: a YAML file, or 'default' for the shipped one; unset = no "
                    "gate (docs/compliance.md); SIGHUP re-reads it and re-checks running variants")
    compliance_classifier: str | None = Field(
        None, max_length=512, validation_alias=AliasChoices("compliance_classifier", "LOLA_COMPLIANCE_CLASSIFIER"),
        description="package.module:factory of an off-path compliance classifier; with it new variants start "
                    "pending until classified (needs LOLA_COMPLIANCE_POLICY)")
    prior_provider: str | None = Field(
        None, validation_alias=AliasChoices("prior_provider", "LOLA_PRIOR_PROVIDER"),
        description="onnx | constant | http | none | package.module:factory (a plug-in, docs/priors-providers.md); "
                    "unset = constant if LOLA_CONSTANT_PRIOR, else onnx if LOLA_MODEL_DIR, else none")
    prior_http_url: str | None = Field(None, validation_alias=AliasChoices("prior_http_url", "LOLA_PRIOR_HTTP_URL"),
                                       description="http prior provider: POST JSON here (docs/priors-providers.md)")
    prior_http_timeout_s: float = Field(2.0, gt=0, le=60,
                                        validation_alias=AliasChoices("prior_http_timeout_s", "LOLA_PRIOR_HTTP_TIMEOUT_S"),
                                        description="connect + read timeout of one http prior call")
    prior_http_max_response_bytes: int = Field(
        1_048_576, ge=64, le=67_108_864,
        validation_alias=AliasChoices("prior_http_max_response_bytes", "LOLA_PRIOR_HTTP_MAX_RESPONSE_BYTES"),
        description="a larger http prior response is an error (no priors for that batch)")
    model_variant: Literal["auto", "fp32", "int8", "fp16"] = Field(
        "auto", validation_alias=AliasChoices("model_variant", "LOLA_MODEL_VARIANT"),
        description="exported ONNX variant to serve; auto = fp16 on CUDA when exported, else fp32")
    model_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", validation_alias=AliasChoices("model_device", "LOLA_MODEL_DEVICE"),
        description="auto = CUDA only when a device is really usable; cuda = fail without one")
    prior_timeout_s: float = Field(10.0, gt=0, le=600, validation_alias=AliasChoices("prior_timeout_s", "LOLA_PRIOR_TIMEOUT_S"))
    prior_batch_size: int = Field(8, ge=1, le=4096, validation_alias=AliasChoices("prior_batch_size", "LOLA_PRIOR_BATCH_SIZE"))
    model_watch_interval_s: float = Field(5.0, gt=0, validation_alias=AliasChoices("model_watch_interval_s", "LOLA_MODEL_WATCH_INTERVAL_S"))
    # --- operations ----------------------------------------------------------------------
    metrics_host: str = Field("0.0.0.0", validation_alias=AliasChoices("metrics_host", "LOLA_METRICS_HOST"))
    metrics_port: int = Field(9400, ge=0, le=65535, validation_alias=AliasChoices("metrics_port", "LOLA_METRICS_PORT"),
                              description="0 = pick a free port (printed in the startup log)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=AliasChoices("log_level", "LOLA_LOG_LEVEL"))

    @field_validator("kafka_properties", mode="before")
    @classmethod
    def _properties_shape(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = _properties_object(value)
        if not isinstance(value, dict):
            raise ValueError("must be an object of librdkafka properties")
        out = {}
        for key, v in value.items():
            if not PROPERTY_RE.fullmatch(str(key)):
                raise ValueError(f"{key!r} is not a librdkafka property name (lower case, dot separated)")
            out[str(key)] = str(v).lower() if isinstance(v, bool) else str(v)
        return out

    @field_validator("replication_factor")
    @classmethod
    def _replicas(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be -1 (the cluster's default) or 1..16")
        return value

    @field_validator("prior_provider")
    @classmethod
    def _provider_name(cls, value: str | None) -> str | None:
        if value is None or value in ("onnx", "constant", "http", "none"):
            return value
        module, sep, attr = value.partition(":")
        ident = r"[A-Za-z_][A-Za-z0-9_]*"
        if not (sep and re.fullmatch(rf"{ident}(\.{ident})*", module) and re.fullmatch(ident, attr)):
            raise ValueError("must be onnx, constant, http, none or package.module:factory")
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _bootstrap_shape(cls, value: str) -> str:
        value = value.strip()
        for part in filter(None, value.split(",")):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"bootstrap server {part!r} is not HOST:PORT")
        return value

    @field_validator("legacy_state_topic")
    @classmethod
    def _legacy_topic_name(cls, value: str) -> str:
        return cls._topic_name(value) if value else value

    @field_validator("events_topic", "decisions_topic", "snapshots_topic", "state_topic", "deadletter_topic",
                     "inflight_topic")
    @classmethod
    def _topic_name(cls, value: str | None) -> str | None:
        if value is None:
            return None  # state_topic: derived from group_id below
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", value) or value in (".", ".."):
            raise ValueError(f"topic name {value!r} must be 1-249 characters of A-Z a-z 0-9 . _ -")
        return value

    # --------------------------------------------------------------------------------------
    @classmethod
    def load(cls, settings_file: str | Path | None = None, **overrides: Any) -> "StreamSettings":
        """Read env (+ optional file), apply non-None ``overrides``; ConfigError on a bad value."""
        settings_file = settings_file or os.environ.get("LOLA_SETTINGS_FILE") or None
        if settings_file is not None and not Path(settings_file).is_file():
            raise ConfigError(f"settings file not found: {settings_file}")
        kwargs = {k: v for k, v in overrides.items() if v is not None}
        passthrough = kafka_env_properties(settings_file)
        if passthrough:
            kwargs.setdefault("kafka_properties", {})
            kwargs["kafka_properties"] = {**_json_properties(settings_file), **passthrough,
                                          **kwargs["kafka_properties"]}
        try:
            return cls(_env_file=settings_file, **kwargs)  # type: ignore[call-arg]
        except ValidationError as exc:
            raise ConfigError.from_validation(exc, "invalid setting") from None

    @classmethod
    def env_var_names(cls) -> dict[str, str]:
        """Map each field to its environment variable name: the upper-case choice of its alias.

        The one listing of the names; ``lola config reference`` documents exactly these.
        """
        out = {}
        for name, field in cls.model_fields.items():
            choices = field.validation_alias.choices if isinstance(field.validation_alias, AliasChoices) else ()
            env = [c for c in choices if isinstance(c, str) and c.isupper()]
            if len(env) != 1:
                raise ConfigError(f"setting {name} must have exactly one upper-case environment name, has {env}")
            out[name] = env[0]
        return out

    @model_validator(mode="after")
    def _state_topic_per_group(self) -> "StreamSettings":
        # One state topic per consumer group by default: a second group then can never push
        # this group's checkpoints out of the restore window (issue 15).
        for name, prefix in (("state_topic", "lola.state"), ("inflight_topic", "lola.inflight")):
            if getattr(self, name) is None:
                topic = f"{prefix}.{self.group_id}"
                try:
                    setattr(self, name, self._topic_name(topic))
                except ValueError:
                    raise ValueError(f"group_id {self.group_id!r} does not make a valid topic name ({topic!r}); "
                                     f"set {name} (LOLA_{name.upper()})") from None
        return self

    def as_env(self, reveal_secrets: bool = False) -> dict[str, str]:
        """These settings as environment variables (what a child ``lola worker`` reads back).

        Unset (None) settings are left out, and so are secrets unless ``reveal_secrets``.
        """
        env = {}
        for field, name in self.env_var_names().items():
            value = getattr(self, field)
            if value is None or (isinstance(value, SecretStr) and not reveal_secrets):
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, dict):  # e.g. kafka_properties, read back as JSON
                env[name] = json.dumps(value)
            else:
                env[name] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    def require_bootstrap(self) -> str:
        if not self.bootstrap_servers:
            raise ConfigError("no broker: pass --bootstrap HOST:PORT or set KAFKA_BOOTSTRAP_SERVERS")
        return self.bootstrap_servers

    def kafka_config(self) -> dict[str, Any]:
        """librdkafka connection settings (bootstrap + security); secrets revealed only here."""
        conf: dict[str, Any] = {"bootstrap.servers": self.require_bootstrap(),
                                "security.protocol": self.security_protocol}
        # librdkafka property -> field; secrets revealed only here, unset fields left out.
        fields = {"sasl.mechanism": "sasl_mechanism", "sasl.username": "sasl_username",
                  "sasl.password": "sasl_password", "ssl.ca.location": "ssl_ca_location",
                  "ssl.certificate.location": "ssl_certificate_location", "ssl.key.location": "ssl_key_location",
                  "ssl.key.password": "ssl_key_password", "sasl.oauthbearer.method": "sasl_oauthbearer_method",
                  "sasl.oauthbearer.client.id": "sasl_oauthbearer_client_id",
                  "sasl.oauthbearer.client.secret": "sasl_oauthbearer_client_secret",
                  "sasl.oauthbearer.token.endpoint.url": "sasl_oauthbearer_token_endpoint_url",
                  "sasl.oauthbearer.scope": "sasl_oauthbearer_scope",
                  "sasl.oauthbearer.extensions": "sasl_oauthbearer_extensions"}
        for key, name in fields.items():
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                conf[key] = value.get_secret_value()
            elif value:
                conf[key] = value
        # Pass-through properties last among connection settings: a user may override any of
        # the above; the worker's own client settings (kafka.py) are applied on top of these.
        conf.update(self.kafka_properties)
        return conf

    def safe_dict(self) -> dict[str, Any]:
        """Settings for logs: secrets masked (SecretStr prints as '**********')."""
        out = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "kafka_properties":  # pass-through values may be secrets: show the keys only
                value = {k: ("**********" if any(w in k for w in ("password", "secret", "key")) else v)
                         for k, v in value.items()}
            out[name] = "**********" if isinstance(value, SecretStr) else (str(value) if isinstance(value, Path) else value)
        return out
