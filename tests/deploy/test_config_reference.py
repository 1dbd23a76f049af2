"""`lola config reference`: the env names are the settings object's one listing, and the
committed reference is what the settings object generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pydantic import AliasChoices, Field

from lola.config_reference import env_fields, env_names, render_reference
from lola.stream.settings import StreamSettings

ROOT = Path(__file__).resolve().parents[2]


class _Toy(StreamSettings):
    required_thing: str = Field(validation_alias=AliasChoices("required_thing", "LOLA_REQUIRED_THING"))
    piped: str = Field("g", validation_alias=AliasChoices("piped", "LOLA_PIPED"), description="consumer | group")


def test_env_names_are_the_settings_one_listing():
    assert env_names() == set(StreamSettings.env_var_names().values())
    assert {"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SASL_PASSWORD", "LOLA_DEFAULT_N_AUX"} <= env_names()


def test_reference_marks_required_hides_secrets_and_escapes_pipes():
    text = render_reference(_Toy)
    rows = {line.split("`")[1]: line for line in text.splitlines() if line.startswith("| `")}
    assert "(required)" in rows["LOLA_REQUIRED_THING"]
    assert "`(secret)`" in rows["KAFKA_SASL_PASSWORD"]
    assert "consumer \\| group" in rows["LOLA_PIPED"]
    assert [f.env for f in env_fields(_Toy)] == sorted(rows)


def test_committed_reference_lists_exactly_the_settings():
    """Every variable the settings object reads is documented, and nothing else.

    Names are the contract checked here; a changed default or description is caught
    by `lola config reference --out docs/configuration.md --check` (regenerate before a release).
    """
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    documented = {line.split("`")[1] for line in committed.splitlines() if line.startswith("| `")}
    assert documented == env_names(), "stale docs/configuration.md: run `lola config reference --out docs/configuration.md`"


def test_check_mode_detects_a_stale_file(tmp_path):
    stale = tmp_path / "configuration.md"
    stale.write_text("# Settings reference\n")
    argv = [sys.executable, "-m", "lola.cli", "config", "reference", "--out", str(stale)]
    out = subprocess.run([*argv, "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "out of date" in out.stderr
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, timeout=120)
    out = subprocess.run([*argv, "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_check_without_out_is_a_one_line_error():
    out = subprocess.run(
        [sys.executable, "-m", "lola.cli", "config", "reference", "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr == "lola: error: --check needs --out FILE\n"
