"""``lola variants ...`` and ``lola bench generate``: bad arguments are one line, before any model loads."""

from __future__ import annotations

import pytest

from lola.cli import main


@pytest.mark.parametrize("args, message", [
    (["variants", "generate"], "give exactly one of --brief or --from-experiment"),
    (["variants", "generate", "--brief", "b", "--from-experiment", "e"], "give exactly one of --brief"),
    (["variants", "generate", "--brief", "b", "--lambda", "1.5"], "--lambda must be in [0, 1]"),
    (["variants", "generate", "--brief", "b", "--n", "0"], "--n must be in [1, 256]"),
    (["variants", "generate", "--brief", "b", "--k", "0"], "--k must be >= 1"),
    (["variants", "eval", "--stories", "0"], "--stories must be >= 1"),
    (["variants", "eval", "--compare", "/nonexistent.json"], "--compare /nonexistent.json: no such file"),
    (["variants", "eval", "--split", "train"], "--split must be test or tune"),
    (["variants", "tune", "--stages", "sft,dpo", "--reuse-sft"], "--reuse-sft needs --stages dpo"),
    (["variants", "tune", "--stages", "dpo", "--reuse-sft", "--out", "/nonexistent-dir"], "--reuse-sft needs --stages dpo and an SFT adapter"),
    (["variants", "tune", "--minutes", "0"], "--minutes must be > 0"),
    (["variants", "tune", "--stages", "sft,rl"], "--stages must name some of sft, dpo"),
    (["variants", "compare", "/nonexistent.json", "/nonexistent2.json"], "/nonexistent.json: no such file"),
    (["bench", "generate", "--rounds", "0"], "--n and --rounds must be >= 1"),
])
def test_bad_arguments_are_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_the_commands_exist(lola_commands):
    assert {"variants generate", "variants tune", "variants eval", "variants compare", "bench generate", "comply check"} <= lola_commands


def test_reuse_sft_without_the_stages_card_is_one_line(tmp_path, capsys):
    # an adapter copied in by hand, without the tune_card.json its SFT run writes beside it
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "adapter_config.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        main(["variants", "tune", "--stages", "dpo", "--reuse-sft", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "tune_card.json" in err and len(err.strip().splitlines()) == 1
