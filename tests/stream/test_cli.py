"""CLI of lola.stream: bad arguments give one line and exit 2; `lola broker` runs Tansu."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from lola.cli import main

BAD_ARGS = [
    (["loadgen", "open", "--bootstrap", "127.0.0.1:9", "--events", "0"], "--events must be >= 1"),
    (["loadgen", "open", "--bootstrap", "127.0.0.1:9", "--duplicate-rate", "1.5"], "--duplicate-rate"),
    (["loadgen", "closed", "--bootstrap", "127.0.0.1:9", "--split", "nope"], "--split must be"),
    (["loadgen", "closed", "--bootstrap", "127.0.0.1:9", "--tau", "0"], "--tau must be"),
    (["loadgen", "closed", "--bootstrap", "127.0.0.1:9", "--contextual", "ts"], "--contextual must be"),
    (["worker", "--bootstrap", "nohost"], "not HOST:PORT"),
    (["snapshot", "--json"], "no broker"),
    (["dlq", "replay"], "no broker"),
    (["experiments", "warm-start", "/nonexistent/past.csv", "--out", "w.npz", "--feature-dim", "8"], "cannot read"),
    (["experiments", "warm-start", "/nonexistent/past.csv", "--out", "w.json", "--feature-dim", "8"], "NAME.npz"),
    (["worker", "--bootstrap", "127.0.0.1:9", "--settings", "/nonexistent/lola.env"], "settings file not found"),
    (["experiments", "list", "--bootstrap", "127.0.0.1:9", "--status", "gone"], "--status must be one of"),
    (["experiments", "show", "e"], "no broker"),
    (["experiments", "archive", "x" * 300, "--bootstrap", "127.0.0.1:9"], "not a valid archive event"),
    (["broker", "--config", "postgres"], "unknown broker configuration 'postgres'; known: memory, memory-batched"),
]


@pytest.mark.parametrize("argv,message", BAD_ARGS, ids=[" ".join(a[:2]) + ":" + m for a, m in BAD_ARGS])
def test_bad_arguments_give_one_line_and_exit_2(argv, message, capsys, monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("LOLA_SETTINGS_FILE", raising=False)
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2
    assert err.startswith("lola: error:") and message in err and "\n" not in err


@pytest.mark.broker
def test_lola_broker_prints_bootstrap_and_stops_on_sigterm():
    from confluent_kafka.admin import AdminClient

    proc = subprocess.Popen([sys.executable, "-m", "lola.cli", "broker"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("bootstrap=127.0.0.1:"), line
        md = AdminClient({"bootstrap.servers": line.split("=", 1)[1]}).list_topics(timeout=10)
        assert md.brokers
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0
