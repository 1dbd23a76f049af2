"""``lola variants generate|tune|eval`` and ``lola bench generate``.

Heavy imports (torch, transformers, onnxruntime, confluent-kafka) stay inside the command bodies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from lola.errors import ConfigError
from lola.stream.cli_common import BOOTSTRAP_HELP
from lola.stream.edge import servable
from lola.generation.model import MAX_CANDIDATES

variants_app = typer.Typer(help="Generated variants: sample, check, score, rank and publish headline candidates; "
                                "tune the generator on what won; evaluate it with an independent judge.",
                           no_args_is_help=True)
DEFAULT_MODEL = Path("models/ctr-onnx")


def active_texts(snapshot: dict) -> list[str]:
    """Texts of a snapshot's serving variants (a snapshot without ``state`` reads ``active`` as the state)."""
    return [arm["text"] for arm in snapshot["arms"].values()
            if arm.get("text") and servable(arm)]


def existing_from_snapshot(experiment_id: str, bootstrap: str | None, settings=None) -> list[str]:
    """Texts of the experiment's serving variants, from its latest policy snapshot."""
    from lola.client import SnapshotReader

    snap = SnapshotReader(bootstrap=bootstrap, settings=settings).experiment(experiment_id)
    if snap is None:
        raise ConfigError(f"--from-experiment {experiment_id}: no snapshot of that experiment on the snapshots topic")
    texts = active_texts(snap)
    if not texts:
        raise ConfigError(f"--from-experiment {experiment_id}: its snapshot names no active variant with a text")
    return texts


def publish(experiment_id: str, top: list[dict], bootstrap: str | None, settings=None) -> list[str]:
    """Send the top candidates as ``variant`` events; returns their variant ids (``gen-`` + text hash)."""
    import hashlib

    from lola.client import EventProducer, variant

    ids = []
    with EventProducer(bootstrap=bootstrap, settings=settings) as producer:
        for c in top:
            vid = "gen-" + hashlib.sha256(c["text"].encode()).hexdigest()[:12]
            producer.send(variant(experiment_id, vid, c["text"]))
            ids.append(vid)
    return ids


@variants_app.command("generate")
def generate_cmd(
    brief: Optional[str] = typer.Option(None, "--brief", help="What the story is about."),
    from_experiment: Optional[str] = typer.Option(None, "--from-experiment",
                                                  help="Use this experiment's active variants (from its snapshot)."),
    existing: list[str] = typer.Option([], "--existing", help="An existing headline (repeatable)."),
    n: int = typer.Option(16, "--n", help="Candidates to sample (1-256)."),
    seed: int = typer.Option(0, "--seed"),
    lam: float = typer.Option(0.3, "--lambda", help="Creativity weight λ in [0, 1] (0: predicted CTR only)."),
    k: int = typer.Option(3, "--k", help="How many top candidates --publish sends and the λ curve averages."),
    temperature: float = typer.Option(0.9, "--temperature"),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Compliance policy YAML (default: the shipped one)."),
    model: Path = typer.Option(DEFAULT_MODEL, "--model", help="Prior CTR model folder (ONNX)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="LoRA adapter from lola variants tune."),
    lambda_curve: Optional[Path] = typer.Option(None, "--lambda-curve", help="Write the λ elbow plot (PNG) here."),
    publish_to: Optional[str] = typer.Option(None, "--publish", help="Send the top k as variant events to this "
                                             "experiment."),
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help=BOOTSTRAP_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Sample N headline candidates with the local SmolLM2, drop duplicates and non-compliant ones,
    score them (prior CTR, creativity) and rank them by the λ trade-off."""
    from lola.comply import load_policy
    from lola.generation.model import Generator
    from lola.generation.pipeline import generate, open_prior
    from lola.generation.score import elbow, lambda_curve as curve_of, plot_curve

    if (brief is None) == (from_experiment is None):
        raise ConfigError("give exactly one of --brief or --from-experiment")
    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}")
    if not 0.0 <= lam <= 1.0:
        raise ConfigError(f"--lambda must be in [0, 1], got {lam}")
    if not 1 <= n <= MAX_CANDIDATES:
        raise ConfigError(f"--n must be in [1, {MAX_CANDIDATES}], got {n}")
    rules = load_policy(policy)
    texts = list(existing)
    if from_experiment is not None:
        texts += existing_from_snapshot(from_experiment, bootstrap)
        brief = "; ".join(texts)
    prior, note = open_prior(model)
    generator = Generator(adapter=adapter)
    result = generate(generator, brief, texts, rules, n=n, seed=seed, lam=lam, prior=prior, prior_note=note,
                      experiment_id=publish_to or from_experiment, temperature=temperature)
    out = {"brief": brief, "existing": texts, "lambda": lam, "seed": seed, "load_seconds": round(generator.load_seconds, 1),
           **result.summary(), "candidates": result.candidates}
    ranked = [c for c in result.candidates if c["rank"] is not None]
    if lambda_curve is not None and ranked:
        import numpy as np

        ctr = np.array([np.nan if c["predicted_ctr"] is None else c["predicted_ctr"] for c in ranked])
        if np.isnan(ctr).all():
            raise ConfigError("--lambda-curve needs predicted CTRs: no prior model (--model)")
        curve = curve_of(ctr, np.array([c["creativity"] for c in ranked]), min(k, len(ranked)))
        plot_curve(curve, lambda_curve, f"top-{min(k, len(ranked))} of {len(ranked)} candidates, seed {seed}")
        out["lambda_curve"] = {"path": str(lambda_curve), "elbow": elbow(curve), "points": curve}
    if publish_to is not None:
        out["published"] = {"experiment_id": publish_to, "variant_ids": publish(publish_to, result.top(k), bootstrap)}
    if as_json:
        typer.echo(json.dumps(out, ensure_ascii=False, indent=1))
        return
    typer.echo(f"{note}; sampled {result.sampled}, {result.duplicates} duplicate(s), {result.empty} empty, "
               f"{result.blocked} blocked; {len(ranked)} ranked at λ={lam}")
    for c in result.candidates:
        ctr = "   -  " if c["predicted_ctr"] is None else f"{100 * c['predicted_ctr']:5.2f}%"
        tag = f"{c['rank']:>3}" if c["rank"] is not None else "BLK"
        cre = "  -  " if c["creativity"] is None else f"{c['creativity']:.2f}"
        typer.echo(f"{tag}  ctr {ctr}  creativity {cre}  {c['text']}")
    if "published" in out:
        typer.echo(f"published {len(out['published']['variant_ids'])} variant(s) to {publish_to}")


@variants_app.command("eval")
def eval_cmd(
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="LoRA adapter to evaluate (default: the base model)."),
    stories: int = typer.Option(40, "--stories", help="Stories of --split (headline tests with a lede)."),
    split: str = typer.Option("test", "--split", help="test (the reported figures) or tune (choosing between "
                              "generators without looking at the test split)."),
    n: int = typer.Option(8, "--n", help="Candidates per story (one batch; the same for every generator)."),
    lam: float = typer.Option(0.3, "--lambda"),
    seed: int = typer.Option(0, "--seed"),
    data: Optional[Path] = typer.Option(None, "--data", help="Upworthy CSV (default: the shared dev CSV)."),
    model: Path = typer.Option(DEFAULT_MODEL, "--model", help="Prior CTR model that ranks the candidates."),
    policy: Optional[Path] = typer.Option(None, "--policy"),
    baseline: Optional[Path] = typer.Option(None, "--compare", help="An earlier eval JSON (the base generator): "
                                            "adds the paired tuned-minus-base difference."),
    out: Path = typer.Option(Path("runs/variants-eval.json"), "--out"),
) -> None:
    """Judge generated headlines of test-split (or tune-split) stories with the TF-IDF ridge fitted on
    the train split (predictions, not measured CTRs)."""
    from lola.comply import load_policy
    from lola.generation import evaluate as ev
    from lola.generation.model import Generator
    from lola.generation.pipeline import open_prior
    from lola.paths import upworthy_csv

    if stories < 1:
        raise ConfigError(f"--stories must be >= 1, got {stories}")
    if split not in ("test", "tune"):
        raise ConfigError(f"--split must be test or tune, got {split!r}")
    if baseline is not None and not baseline.is_file():
        raise ConfigError(f"--compare {baseline}: no such file (run the base evaluation first)")
    rules = load_policy(policy)
    items, parts = ev.stories(data or upworthy_csv(), split, stories)
    judge = ev.judge_for(parts["train"])
    prior, note = open_prior(model)
    generator = Generator(adapter=adapter)
    head = {"generator": str(adapter) if adapter else "base SmolLM2-135M-Instruct", "split": split, "prior": note, "n": n,
            "lambda": lam, "seed": seed, "judge": "TF-IDF ridge (word 1-2 + char 3-5 grams), train split",
            "note": "judge CTRs are predictions, not measured clicks",
            "judge_check_tune_split": ev.judge_check(judge, parts["tune"])}
    partial = out.with_suffix(".partial.json")
    rows = ev.evaluate_generator(generator, items, judge, rules, prior, n, lam, seed,
                                 log=lambda m: typer.echo(m, err=True),
                                 on_row=lambda done: ev.write(partial, {**head, "rows": done}))
    partial.unlink(missing_ok=True)
    payload = {**head, "summary": ev.summarise(rows), "rows": rows}
    if baseline is not None:
        payload["paired"] = ev.compare(json.loads(baseline.read_text())["rows"], rows)
    ev.write(out, payload)
    typer.echo(json.dumps({k: payload[k] for k in ("generator", "summary", *(("paired",) if baseline else ()))},
                          indent=1))


@variants_app.command("compare")
def compare_cmd(
    base: Path = typer.Argument(..., help="Eval JSON of the base generator (a .partial.json of a running one too)."),
    tuned: Path = typer.Argument(..., help="Eval JSON of the tuned generator."),
) -> None:
    """Both generators on the stories both evaluations reached, the paired tuned-minus-base
    differences of the judge's CTRs (predictions) and the success criterion's parts."""
    from lola.generation import evaluate as ev

    for path in (base, tuned):
        if not path.is_file():
            raise ConfigError(f"{path}: no such file (run lola variants eval first)")
    typer.echo(json.dumps(ev.paired_report(json.loads(base.read_text())["rows"], json.loads(tuned.read_text())["rows"]),
                          indent=1))


def register(app: typer.Typer) -> None:
    """Add ``lola variants ...`` and ``lola bench generate``."""
    from lola.bench.cli import bench_app
    from lola.generation import bench, tune_cli

    tune_cli.register(variants_app)
    bench.register(bench_app)
    app.add_typer(variants_app, name="variants")
