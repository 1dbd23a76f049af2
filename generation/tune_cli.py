"""``lola variants tune``: the command that builds the tuned generator (SFT, then DPO; see
:mod:`lola.generation.sft` and :mod:`lola.generation.tune`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from lola.errors import ConfigError
from lola.generation.sft import sft_examples, train_sft
from lola.generation.tune import preference_pairs, train_dpo

#: The stages of ``lola variants tune``, in the order they run; each writes an adapter folder of that name.
STAGES = ("sft", "dpo")


def parse_stages(text: str) -> list[str]:
    stages = [s.strip() for s in text.split(",") if s.strip()]
    if not stages or any(s not in STAGES for s in stages) or len(set(stages)) != len(stages):
        raise ConfigError(f"--stages must name some of {', '.join(STAGES)} once each, got {text!r}")
    return sorted(stages, key=STAGES.index)


def register(variants_app: typer.Typer) -> None:
    @variants_app.command("tune")
    def tune(
        out: Path = typer.Option(Path("models/generator-tuned"), "--out",
                                 help="Folder for the stages' adapters (never commit it)."),
        stages: str = typer.Option("sft,dpo", "--stages", help="sft, dpo or sft,dpo (DPO then uses the SFT model "
                                   "as its reference)."),
        sft_minutes: float = typer.Option(22.0, "--sft-minutes", help="Wall-clock budget of the SFT stage."),
        minutes: float = typer.Option(25.0, "--minutes", help="Wall-clock budget of the DPO stage."),
        max_steps: int = typer.Option(10_000, "--max-steps", help="Step cap of each stage."),
        sft_batch_size: int = typer.Option(8, "--sft-batch-size", help="Winning headlines per SFT step."),
        sft_lr: float = typer.Option(5e-4, "--sft-lr"),
        batch_size: int = typer.Option(4, "--batch-size", help="Preference pairs per DPO step."),
        lr: float = typer.Option(1e-4, "--lr", help="DPO learning rate (5e-4 collapsed the generator's diversity: docs/generation.md)."),
        beta: float = typer.Option(0.5, "--beta", help="DPO temperature (larger: closer to the SFT reference)."),
        held_out: int = typer.Option(64, "--held-out", help="Tune-split pairs for the held-out figures."),
        data: Optional[Path] = typer.Option(None, "--data", help="Upworthy CSV (default: the shared dev CSV)."),
        policy: Optional[Path] = typer.Option(None, "--policy"),
        seed: int = typer.Option(0, "--seed"),
        reuse_sft: bool = typer.Option(False, "--reuse-sft", help="With --stages dpo: train DPO on the SFT adapter "
                                       "already in --out (an earlier run's) instead of on the base model."),
    ) -> None:
        """Tune the generator on train-split winners: LoRA SFT on the winning headlines, then LoRA DPO
        on preference pairs (same test, significantly different CTRs) with the SFT model as reference."""
        from lola.comply import load_policy
        from lola.data.upworthy import load_packages, split_packages
        from lola.paths import upworthy_csv

        todo = parse_stages(stages)
        sft_card = out / "sft" / "tune_card.json"  # written with the SFT adapter (generation/sft.py)
        if reuse_sft and (todo != ["dpo"] or not (out / "sft" / "adapter_config.json").is_file()
                          or not sft_card.is_file()):
            raise ConfigError(f"--reuse-sft needs --stages dpo and an SFT adapter in {out / 'sft'} "
                              "(adapter_config.json and tune_card.json)")
        if minutes <= 0 or sft_minutes <= 0 or max_steps < 1 or batch_size < 1 or sft_batch_size < 1 or held_out < 0:
            raise ConfigError("--minutes must be > 0 and so must --sft-minutes; --max-steps and the batch sizes >= 1, "
                              "--held-out >= 0")
        rules = load_policy(policy)
        packages, _ = load_packages(data or upworthy_csv())
        parts = split_packages(packages)
        pairs = preference_pairs(parts["train"], rules)
        tune_pairs = preference_pairs(parts["tune"], rules)[:held_out]
        echo = lambda m: typer.echo(m, err=True)  # noqa: E731
        echo(f"{len(pairs)} train pairs, {len(tune_pairs)} held-out tune pairs; stages {','.join(todo)}")
        cards, done = {}, (["sft"] if reuse_sft else [])
        if reuse_sft:  # the reused stage's card stays in the folder's card
            try:
                cards["sft"] = json.loads(sft_card.read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"--reuse-sft: cannot read {sft_card}: {exc}") from None
        out.mkdir(parents=True, exist_ok=True)
        (out / "stages.json").unlink(missing_ok=True)  # a re-run lists only the stages it finished
        if "sft" in todo:
            cards["sft"] = train_sft(sft_examples(pairs), out / "sft", sft_minutes, max_steps, sft_batch_size, sft_lr,
                                     seed=seed, held_out=sft_examples(tune_pairs), log=echo)
            done.append("sft")
            (out / "stages.json").write_text(json.dumps(done))
        if "dpo" in todo:
            cards["dpo"] = train_dpo(pairs, out / "dpo", minutes, max_steps, batch_size, lr, beta, seed=seed,
                                     held_out=tune_pairs, reference=out / "sft" if "sft" in done else None, log=echo)
            done.append("dpo")
            (out / "stages.json").write_text(json.dumps(done))
        card = {"stages": done, "train_pairs": len(pairs), **cards}
        (out / "tune_card.json").write_text(json.dumps(card, indent=1))
        typer.echo(json.dumps(card, indent=1))
