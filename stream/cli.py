"""CLI commands of lola.stream: broker, worker, loadgen, snapshot, dlq, experiments.

Heavy imports (confluent_kafka, numba through the kernels) stay inside command bodies.
Bad arguments raise :class:`lola.errors.ConfigError`; the root prints one line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from lola.errors import ConfigError
from lola.stream import cli_experiments
from lola.stream.cli_common import BOOTSTRAP_HELP, SETTINGS_HELP, load_settings, topics

_settings, _topics = load_settings, topics  # short names used by every command below


def _write_json(obj: object, path: Optional[Path]) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    typer.echo(text)


def broker(
    port: Optional[int] = typer.Option(None, "--port", help="TCP port (default: a free loopback port)"),
    host: str = typer.Option("127.0.0.1", "--host", help="listen and advertised host"),
    log_file: Optional[Path] = typer.Option(None, "--log-file", help="file for the broker's own log"),
    config: str = typer.Option("memory", "--config",
                               help="broker configuration: memory (tests, demos) or memory-batched (long runs)"),
) -> None:
    """Start a Tansu Kafka-protocol broker (memory storage) in the foreground.

    Prints ``bootstrap=HOST:PORT`` once it answers metadata requests, then the
    ``LOLA_*=value`` client settings of the configuration (export them for the worker and
    producers); Ctrl-C or SIGTERM stops it.
    """
    import signal
    import threading

    from lola.stream.broker import EmbeddedBroker, broker_config
    from lola.stream.settings import StreamSettings

    env_names = StreamSettings.env_var_names()
    client_env = {env_names[k]: v for k, v in broker_config(config).client_settings.items()}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedBroker(port=port, host=host, log_path=log_file, config=config) as b:
        typer.echo(f"bootstrap={b.bootstrap}", nl=True)
        for name, value in client_env.items():
            typer.echo(f"{name}={value}")
        sys.stdout.flush()
        try:
            while not stop.wait(0.5):
                if not b.alive():
                    raise ConfigError(f"tansu exited unexpectedly (code {b.process and b.process.returncode})")
        except KeyboardInterrupt:
            pass


def worker(
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help=BOOTSTRAP_HELP),
    settings_file: Optional[Path] = typer.Option(None, "--settings", help=SETTINGS_HELP),
    group: Optional[str] = typer.Option(None, "--group", help="consumer group id (LOLA_GROUP_ID)"),
    events_topic: Optional[str] = typer.Option(None, "--events-topic", help="input topic (LOLA_EVENTS_TOPIC)"),
    topic_prefix: Optional[str] = typer.Option(None, "--topic-prefix",
                                               help="use PREFIX.events/.decisions/.snapshots/.state/.deadletter"),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="0 = free port (LOLA_METRICS_PORT)"),
    model_dir: Optional[Path] = typer.Option(None, "--model", help="ONNX prior model folder (LOLA_MODEL_DIR)"),
    constant_prior: Optional[float] = typer.Option(None, "--constant-prior", help="prior CTR for every variant"),
    partitions: Optional[int] = typer.Option(None, "--partitions", help="partitions when creating topics"),
    checkpoint_interval: Optional[float] = typer.Option(None, "--checkpoint-interval", help="seconds"),
) -> None:
    """Run the stream worker until SIGTERM (checkpoint, commit, exit 0)."""
    import signal

    # Until the worker installs its own handlers nothing has been consumed: a SIGTERM
    # that early is a clean exit 0, not a -15.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    from lola.stream.memory import pin_mmap_threshold
    from lola.stream.observability import configure_json_logging
    from lola.stream.worker import Worker

    # A prior flag is more specific than the environment: --constant-prior wins over the image's
    # LOLA_MODEL_DIR, --model over a LOLA_CONSTANT_PRIOR (both flags: the model, as before).
    provider = "onnx" if model_dir is not None else "constant" if constant_prior is not None else None
    s = _settings(settings_file, bootstrap_servers=bootstrap, group_id=group, metrics_port=metrics_port,
                  model_dir=model_dir, constant_prior=constant_prior, prior_provider=provider, partitions=partitions,
                  checkpoint_interval_s=checkpoint_interval, **_topics(topic_prefix, events_topic))
    s.require_bootstrap()
    configure_json_logging(s.log_level)
    pin_mmap_threshold(s.malloc_mmap_threshold_bytes)
    w = Worker(s)
    w.install_signal_handlers()
    w.run()


loadgen_app = typer.Typer(help="Load generators: open (seeded stream + truth) and closed (Upworthy ad server).",
                          no_args_is_help=True)


@loadgen_app.command("open")
def loadgen_open(
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help=BOOTSTRAP_HELP),
    events: int = typer.Option(10_000, "--events", help="valid impression+click events"),
    experiments: int = typer.Option(10, "--experiments"),
    arms: int = typer.Option(3, "--arms"),
    seed: int = typer.Option(0, "--seed"),
    truth: Optional[Path] = typer.Option(None, "--truth", help="write exact expected per-arm counts here"),
    duplicate_rate: float = typer.Option(0.05, "--duplicate-rate"),
    malformed_rate: float = typer.Option(0.01, "--malformed-rate"),
    late_click_rate: float = typer.Option(0.0, "--late-click-rate"),
    rate: float = typer.Option(0.0, "--rate", help="records per second (0 = as fast as possible)"),
    topic_prefix: Optional[str] = typer.Option(None, "--topic-prefix"),
    settings_file: Optional[Path] = typer.Option(None, "--settings", help=SETTINGS_HELP),
) -> None:
    """Send a seeded stream of impressions and clicks with duplicates and malformed messages."""
    for name, value in (("--events", events), ("--experiments", experiments), ("--arms", arms)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    for name, value in (("--duplicate-rate", duplicate_rate), ("--malformed-rate", malformed_rate),
                        ("--late-click-rate", late_click_rate)):
        if not 0 <= value < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {value}")
    if duplicate_rate + malformed_rate >= 1:
        raise ConfigError("--duplicate-rate + --malformed-rate must be < 1")
    from confluent_kafka import Producer

    from lola.stream import kafka as kf
    from lola.stream.loadgen import open_stream, send

    s = _settings(settings_file, bootstrap_servers=bootstrap, **_topics(topic_prefix))
    s.require_bootstrap()
    stream = open_stream(events, experiments, arms, seed, duplicate_rate, malformed_rate, late_click_rate)
    kf.ensure_topics(s)
    producer = Producer(kf.producer_config(s))
    send(producer, s.events_topic, stream.records, rate)
    if truth is not None:
        truth.parent.mkdir(parents=True, exist_ok=True)
        truth.write_text(json.dumps(stream.truth, indent=1, sort_keys=True) + "\n")
    typer.echo(json.dumps({**stream.summary, "topic": s.events_topic, "truth": str(truth) if truth else None}))


@loadgen_app.command("closed")
def loadgen_closed(
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help=BOOTSTRAP_HELP),
    tests: int = typer.Option(20, "--tests", help="number of Upworthy headline tests to replay"),
    split: Optional[str] = typer.Option(None, "--split", help="train|tune|test: take tests from this split only"),
    impressions_per_arm: Optional[int] = typer.Option(None, "--impressions-per-arm",
                                                      help="budget per test = this x its arms (default 200)"),
    tau: Optional[int] = typer.Option(None, "--tau", help="budget per test in impressions (overrides per-arm)"),
    seed: int = typer.Option(0, "--seed"),
    rate: float = typer.Option(0.0, "--rate", help="decision requests per second (0 = window-limited)"),
    inflight: int = typer.Option(256, "--inflight", help="max outstanding decision requests"),
    policy: Optional[str] = typer.Option(None, "--policy", help="experiment policy (default: worker's)"),
    n_aux: Optional[float] = typer.Option(None, "--n-aux"),
    alpha: Optional[float] = typer.Option(None, "--alpha"),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Upworthy CSV (default: shared data)"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write the JSON summary here"),
    timeout: float = typer.Option(600.0, "--timeout", help="give up after this many seconds"),
    topic_prefix: Optional[str] = typer.Option(None, "--topic-prefix"),
    run_id: Optional[str] = typer.Option(None, "--run-id",
                                         help="experiment ids are <run id>-<test id>-<eyecatcher id> (default: from seed and time)"),
    settings_file: Optional[Path] = typer.Option(None, "--settings", help=SETTINGS_HELP),
    contextual: Optional[str] = typer.Option(
        None, "--contextual", help="linucb|falcon: contextual experiments; requests carry a segment and 8 noise "
                                   "fields, CTRs vary by segment (docs/contextual.md)"),
) -> None:
    """Ad-server simulator replaying Upworthy headline tests against a running worker."""
    if tests < 1:
        raise ConfigError(f"--tests must be >= 1, got {tests}")
    if split is not None and split not in ("train", "tune", "test"):
        raise ConfigError(f"--split must be train, tune or test, got {split!r}")
    if impressions_per_arm is not None and impressions_per_arm < 1:
        raise ConfigError("--impressions-per-arm must be >= 1")
    if tau is not None and tau < 1:
        raise ConfigError("--tau must be >= 1")
    if inflight < 1:
        raise ConfigError("--inflight must be >= 1")
    if contextual is not None and contextual not in ("linucb", "falcon"):
        raise ConfigError(f"--contextual must be linucb or falcon, got {contextual!r}")
    from lola.data.upworthy import headline_tests, load_packages, split_packages
    from lola.paths import upworthy_csv
    from lola.stream.loadgen import run_closed

    s = _settings(settings_file, bootstrap_servers=bootstrap, **_topics(topic_prefix))
    s.require_bootstrap()
    packages, _ = load_packages(csv_path or upworthy_csv())
    if split is not None:
        packages = split_packages(packages)[split]
    all_tests = headline_tests(packages)
    if not all_tests:
        raise ConfigError("no headline tests in the chosen data")
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(all_tests))[:tests]
    chosen = [all_tests[i] for i in sorted(order)]
    budgets = [tau if tau is not None else (impressions_per_arm or 200) * t.n_arms for t in chosen]
    summary = run_closed(s, chosen, budgets, seed, rate=rate, inflight=inflight, policy=policy, n_aux=n_aux,
                         alpha=alpha, timeout_s=timeout, run_id=run_id,
                         contextual=None if contextual is None else {
                             # the noise fields are sent but not declared, so the worker's default
                             # user_dim (8) fits; the replay declares them (docs/contextual.md)
                             "algorithm": contextual, "features": {"categorical": ["segment"]}})
    _write_json(summary, out)


def snapshot(
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help=BOOTSTRAP_HELP),
    as_json: bool = typer.Option(False, "--json", help="print JSON (the truth-file shape)"),
    full: bool = typer.Option(False, "--full", help="every arm field (prior, score, serving share), not just counts"),
    compare: Optional[Path] = typer.Option(None, "--compare", help="truth file: exit 1 if the counts differ"),
    topic_prefix: Optional[str] = typer.Option(None, "--topic-prefix"),
    settings_file: Optional[Path] = typer.Option(None, "--settings", help=SETTINGS_HELP),
) -> None:
    """Print the worker's per-experiment state from the policy snapshot topic."""
    from lola.stream.snapshot import counts_view, diff_counts, read_snapshots

    s = _settings(settings_file, bootstrap_servers=bootstrap, **_topics(topic_prefix))
    s.require_bootstrap()
    view = counts_view(read_snapshots(s), full=full)
    if compare is not None:
        try:
            expected = json.loads(compare.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read truth file {compare}: {exc}") from None
        problems = diff_counts(expected, counts_view(read_snapshots(s)))
        if problems:
            typer.echo("counts differ: " + "; ".join(problems), err=True)
            raise typer.Exit(1)
        typer.echo(f"counts match the truth file ({len(expected)} experiments)", err=True)
    if as_json:
        typer.echo(json.dumps(view, sort_keys=True))
    else:
        for exp_id, arms in view.items():
            typer.echo(exp_id)
            for vid, arm in arms.items():
                typer.echo("  " + vid + "  " + "  ".join(f"{k}={v}" for k, v in arm.items()))


dlq_app = typer.Typer(help="Dead-letter tools.", no_args_is_help=True)


@dlq_app.command("replay")
def dlq_replay(
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help=BOOTSTRAP_HELP),
    reason: Optional[list[str]] = typer.Option(None, "--reason", help="only dead letters with this reason (repeatable)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="count, publish nothing"),
    topic_prefix: Optional[str] = typer.Option(None, "--topic-prefix"),
    settings_file: Optional[Path] = typer.Option(None, "--settings", help=SETTINGS_HELP),
) -> None:
    """Re-publish dead letters to their source topic (from headers), optionally by reason."""
    from lola.stream.dlq import replay_dead_letters

    s = _settings(settings_file, bootstrap_servers=bootstrap, **_topics(topic_prefix))
    s.require_bootstrap()
    typer.echo(json.dumps(replay_dead_letters(s, set(reason or ()), dry_run=dry_run), sort_keys=True))


def schema(
    event_type: Optional[str] = typer.Argument(None, help="one event type (default: all, as one JSON object)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write <type>.json files into this folder instead"),
) -> None:
    """Print the JSON Schema (draft 2020-12) of the events, generated from the event models."""
    from lola.stream.events import json_schemas

    schemas = json_schemas()
    if event_type is not None:
        if event_type not in schemas:
            raise ConfigError(f"unknown event type {event_type!r}; known: {', '.join(schemas)}")
        schemas = {event_type: schemas[event_type]}
    if out is None:
        body = next(iter(schemas.values())) if event_type is not None else schemas
        typer.echo(json.dumps(body, indent=2, sort_keys=True))
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, body in schemas.items():
            (out / f"{name}.json").write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write schemas to {out}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {len(schemas)} schema(s) to {out}")


experiments_app = typer.Typer(help="Experiments: list, show, archive (lifecycle); LinUCB warm starts.",
                              no_args_is_help=True)
cli_experiments.register(experiments_app)


@experiments_app.command("warm-start")
def experiments_warm_start(
    past: Path = typer.Argument(..., help="CSV of past tests: experiment_id, text, impressions, clicks (one row per variant)"),
    out: Path = typer.Option(..., "--out", help="NAME.npz to write, in the worker's warm_start_dir"),
    feature_dim: int = typer.Option(..., "--feature-dim", help="the worker's feature_dim (LOLA_FEATURE_DIM)"),
) -> None:
    """Write a LinUCB warm start (A = ridge I + X'X, b = X'r) for experiments with warm_start=NAME."""
    from lola.stream.warm_start import WARM_START_WEIGHT, check_out, read_past_tests, save

    check_out(out)
    X, r, tests = read_past_tests(past, feature_dim)
    save(out, X, r)
    typer.echo(json.dumps({"out": str(out), "name": out.stem, "past_tests": tests, "rows": int(X.shape[0]),
                           "feature_dim": feature_dim, "weight": WARM_START_WEIGHT}, sort_keys=True))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root ``lola`` app."""
    app.command("broker")(broker)
    app.command("worker")(worker)
    app.command("snapshot")(snapshot)
    app.command("schema")(schema)
    app.add_typer(loadgen_app, name="loadgen")
    app.add_typer(dlq_app, name="dlq")
    app.add_typer(experiments_app, name="experiments")
