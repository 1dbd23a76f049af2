"""``lola comply check``: one text, a CSV, JSON lines, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lola.cli import main


def run(capsys, *args) -> tuple[int, str, str]:
    try:
        main(["comply", "check", *args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_one_text_ok_and_blocked(capsys):
    code, out, _ = run(capsys, "--text", "Penguins learn to fly, sort of")
    assert code == 0 and out.startswith("ok")
    code, out, _ = run(capsys, "--text", "A 100% guaranteed cure", "--json")
    row = json.loads(out)
    assert code == 1 and row["compliant"] is False
    assert {v["rule"] for v in row["violations"]} == {"unverifiable_claim"}


def test_csv_with_experiments(tmp_path, capsys):
    path = tmp_path / "v.csv"
    path.write_text("experiment_id,variant_id,text\nsponsored-1,a,Ten ways to save\n"
                    "sponsored-1,b,Sponsored: ten ways to save\norganic,c,Ten ways to save\n")
    code, out, err = run(capsys, "--in", str(path), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and [r["compliant"] for r in rows] == [False, True, True]
    assert rows[0]["violations"][0]["rule"] == "disclosure"


@pytest.mark.parametrize("args, message", [
    ([], "give exactly one of --text or --in"),
    (["--text", "a", "--in", "x.csv"], "give exactly one of --text or --in"),
    (["--in", "/nonexistent.csv"], "cannot read /nonexistent.csv"),
])
def test_bad_arguments_one_line(capsys, args, message):
    code, _, err = run(capsys, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_bad_policy_file_through_the_real_cli(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("max_length: nope\n")
    proc = subprocess.run([sys.executable, "-m", "lola.cli", "comply", "check", "--policy", str(bad),
                           "--text", "hello there"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"lola: error: {bad}: max_length: Input should be a valid integer, "
                                                "unable to parse string as an integer"]
