"""The root CLI: help works, and errors are one line."""

from __future__ import annotations

import subprocess
import sys


def _lola(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lola.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_commands():
    out = _lola("--help")
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout


def test_unknown_command_is_one_line_not_traceback():
    out = _lola("no-such-command")
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
