"""The root CLI: its help lists every command, and errors are one line."""

from __future__ import annotations

import subprocess
import sys

# The commands `lola --help` lists (issue 16 moved the replay and the demo into packages without changing these).
ROOT_COMMANDS = ["version", "broker", "worker", "snapshot", "schema", "serve", "demo", "evaluate", "report", "loadgen", "dlq", "experiments", "priors", "bench", "replay", "config", "comply", "variants"]


def _lola(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lola.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_command_in_order():
    out = _lola("--help")
    assert out.returncode == 0, out.stderr
    listed = [line.split()[1] for line in out.stdout.splitlines()
              if line.startswith("│ ") and line[2] != " " and len(line.split()) > 2 and line.split()[1].isalpha()
              and line.split()[1] == line.split()[1].lower() and not line.startswith("│ --")]
    assert [c for c in listed if c in ROOT_COMMANDS] == ROOT_COMMANDS


def test_every_command_path(lola_commands):
    assert {"replay bai", "replay contextual", "replay baseline-prior", "replay synthetic-prior", "replay ideal-observer",
            "bench kernels", "bench stream", "bench priors", "bench soak", "bench stats", "bench ope", "bench ope-heldout", "bench serve", "bench checkpoints", "bench lifecycle", "replay edge", "replay ts-refresh", "loadgen open", "loadgen closed", "dlq replay", "experiments warm-start",
            "experiments list", "experiments show", "experiments archive",
            "priors train", "priors export", "priors score", "priors eval", "priors readout", "priors projection", "priors readout-study",
            "priors build-default", "bench generate", "comply check", "variants generate", "variants tune",
            "variants eval", "variants compare",
            "config reference", *ROOT_COMMANDS} == lola_commands


def test_version_prints_the_package_version():
    from lola import __version__

    assert _lola("version").stdout == f"{__version__}\n"


def test_unknown_command_is_one_line_not_traceback():
    out = _lola("no-such-command")
    assert out.returncode == 2
    assert out.stderr.splitlines() == ["lola: error: No such command 'no-such-command'. (see 'lola --help')"]


def test_unknown_option_and_bad_value_are_one_line_naming_the_command():
    out = _lola("worker", "--no-such-option")
    assert out.returncode == 2
    assert out.stderr.splitlines() == ["lola: error: No such option: --no-such-option (see 'lola worker --help')"]
    out = _lola("demo", "--tests", "many")
    assert out.returncode == 2
    [line] = out.stderr.splitlines()
    assert line.startswith("lola: error: Invalid value for '--tests'") and line.endswith("(see 'lola demo --help')")


def test_schema_prints_one_type_writes_files_and_rejects_unknown(tmp_path):
    import json

    out = _lola("schema", "impression")
    assert out.returncode == 0 and json.loads(out.stdout)["$schema"].endswith("2020-12/schema")
    assert _lola("schema", "--out", str(tmp_path)).returncode == 0
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == sorted(
        ["variant", "experiment", "decision_request", "impression", "click", "conversion", "decision", "policy_snapshot"])
    bad = _lola("schema", "purchase")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown event type" in bad.stderr
