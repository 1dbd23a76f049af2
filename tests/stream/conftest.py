"""Broker fixtures: ONE Tansu broker per test session, fresh topics and groups per test."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

_counter = itertools.count()

#: Tansu finishes a consumer group's first JoinGroup only after half the session
#: timeout; 3 s keeps rebalances quick in tests while staying above heartbeats.
SESSION_TIMEOUT_MS = 3000


def _warm_kernels() -> None:
    """Compile (or load) the Numba kernels once in this process, so their on-disk cache
    exists before worker subprocesses start: otherwise every subprocess pays the JIT."""
    from lola.stream.processor import warm_up

    warm_up()


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """The session's Tansu broker (or an external one from LOLA_TEST_BOOTSTRAP)."""
    _warm_kernels()
    external = os.environ.get("LOLA_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    from lola.stream.broker import EmbeddedBroker

    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b.bootstrap
        # Destroy the clients tests dropped while the broker still answers, so that
        # librdkafka does not log reconnect failures after pytest's summary line.
        import gc

        gc.collect()


@pytest.fixture
def stream_settings(broker):
    """Factory of StreamSettings with a fresh topic prefix and group per call."""
    from lola.stream.settings import StreamSettings

    def make(**overrides):
        prefix = f"t{next(_counter)}-{uuid.uuid4().hex[:6]}"
        base = dict(bootstrap_servers=broker, events_topic=f"{prefix}.events",
                    decisions_topic=f"{prefix}.decisions", snapshots_topic=f"{prefix}.snapshots",
                    state_topic=f"{prefix}.state", deadletter_topic=f"{prefix}.deadletter",
                    group_id=f"{prefix}-workers", partitions=4, session_timeout_ms=SESSION_TIMEOUT_MS,
                    metrics_port=0, checkpoint_interval_s=0.5, snapshot_interval_s=0.3)
        base.update(overrides)
        s = StreamSettings(**base)
        return s

    return make


def settings_env(settings) -> dict[str, str]:
    """Environment that makes a `lola worker` subprocess use these settings."""
    env = {k: v for k, v in os.environ.items() if k not in type(settings).env_var_names().values()}
    return {**env, **settings.as_env(reveal_secrets=True)}


class WorkerProcess:
    """A `lola worker` subprocess with its log file."""

    def __init__(self, settings, log_dir: Path, name: str, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "lola.cli", "worker", *args],
                                     env={**settings_env(settings), **(env or {})},
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self._log.close()
        return rc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def events(self) -> list[dict]:
        """The JSON lines of the worker's log so far."""
        import json

        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out


@pytest.fixture
def worker_procs(tmp_path):
    """Start `lola worker` subprocesses; every one still alive at teardown is killed."""
    started: list[WorkerProcess] = []

    def start(settings, name: str | None = None, env: dict[str, str] | None = None,
              args: tuple[str, ...] = ()) -> WorkerProcess:
        w = WorkerProcess(settings, tmp_path, name or f"worker{len(started)}", env, args)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.kill()


class ThreadWorker:
    """An in-process Worker on a thread (for tests that need its object)."""

    def __init__(self, settings, **kw) -> None:
        from lola.stream.worker import Worker

        self.worker = Worker(settings, serve_http=kw.pop("serve_http", False), **kw)
        self.result = None
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.worker.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def stop(self) -> dict:
        self.worker.stop()
        self.thread.join(60)
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def thread_worker():
    started: list[ThreadWorker] = []

    def start(settings, **kw) -> ThreadWorker:
        w = ThreadWorker(settings, **kw)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.thread.is_alive():
            w.worker.stop()
            w.thread.join(60)
    # pytest keeps `start` (and so this list) reachable until the session ends; drop the
    # workers now, or their Kafka clients outlive the session broker and log reconnect errors.
    started.clear()


def wait_for_counts(settings, truth: dict, timeout_s: float = 60.0) -> dict:
    """Poll the snapshot topic until its counts equal ``truth``; fail with the diff."""
    from lola.stream.snapshot import counts_view, diff_counts, read_snapshots

    deadline = time.monotonic() + timeout_s
    view: dict = {}
    while time.monotonic() < deadline:
        view = counts_view(read_snapshots(settings))
        if view == truth:
            return view
        time.sleep(0.5)
    pytest.fail("snapshot counts never matched the truth: " + "; ".join(diff_counts(truth, view)))


def read_dead_letters(settings) -> list:
    from confluent_kafka import Consumer

    from lola.stream import kafka as kf

    conf = kf.consumer_config(settings, "test-dlq-reader")
    c = Consumer(conf)
    md = c.list_topics(settings.deadletter_topic, timeout=10).topics[settings.deadletter_topic]
    c.close()
    out = []
    for p in sorted(md.partitions):
        for msg in kf.read_partition_to_end(conf, settings.deadletter_topic, p, 0):
            out.append((dict(msg.headers() or ()), msg.key(), msg.value()))
    return out


@pytest.fixture
def helpers():
    """Plain helper functions (tests/ has no packages, so they travel as a fixture)."""

    class H:
        wait_for_counts = staticmethod(wait_for_counts)
        read_dead_letters = staticmethod(read_dead_letters)

    return H


@pytest.fixture
def kernel_bug_on(monkeypatch):
    """``arm(value)``: from now on, ``lola.kernels.update`` raises ZeroDivisionError (after
    writing its whole batch: the worst case, a half-applied batch) whenever the record whose
    value is ``value`` was decoded since its last call: a kernel bug on one record."""
    import lola.kernels
    from lola.stream import events as ev

    def arm(victim_value: bytes) -> None:
        real_update, real_decode = lola.kernels.update, ev.decode
        armed = {"on": False}

        def decode(value, key=None, max_bytes=65_536):
            armed["on"] = armed["on"] or value == victim_value
            return real_decode(value, key, max_bytes)

        def buggy_update(*args):
            real_update(*args)
            if armed["on"]:
                armed["on"] = False
                raise ZeroDivisionError("kernel bug")

        monkeypatch.setattr(ev, "decode", decode)
        monkeypatch.setattr(lola.kernels, "update", buggy_update)

    return arm
