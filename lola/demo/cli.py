"""The ``lola demo`` command."""

from __future__ import annotations

from pathlib import Path

import typer

from lola.demo.options import DEFAULT_MODEL_DIR, SHORT, DemoOptions
from lola.errors import ConfigError
from lola.paths import upworthy_csv


def demo(
    model: Path = typer.Option(None, "--model", help="Prior model folder (model_card.json) (default: models/ctr-onnx if built)."),
    no_model: bool = typer.Option(False, "--no-model", help="Run without LLM priors even if a model is built."),
    data: Path = typer.Option(None, "--data", help="Upworthy package CSV (default: the shared dev CSV)."),
    tests: int = typer.Option(None, "--tests", help="Headline tests to run (default 100; --short: 6)."),
    tau: int = typer.Option(None, "--tau", help="Horizon per test = tau x arms impressions (default 500; --short: 20)."),
    duration: float = typer.Option(None, "--duration", help="Time limit of the live phase, seconds (default 480; --short: 40)."),
    reps: int = typer.Option(None, "--reps", help="Offline replay repetitions (default 10; --short: 2)."),
    seed: int = typer.Option(7, "--seed", help="Seed of test selection, load generator and replay."),
    out_dir: Path = typer.Option(Path("reports"), "--out-dir", help="Where demo-<timestamp>.md and its plots go."),
    bootstrap: str = typer.Option(None, "--bootstrap", help="Use this Kafka instead of starting the embedded broker."),
    split: str = typer.Option("test", "--split", help="Which split's tests to run (test = never seen by the prior model)."),
    short: bool = typer.Option(False, "--short", help="A quick run (about a minute) for tests and smoke checks."),
    no_live: bool = typer.Option(False, "--no-live", help="Plain progress lines instead of the live table."),
) -> None:
    """Run the main job: broker, worker and closed-loop load generator, then a report with plots."""
    base = dict(tests=DemoOptions.tests, tau=DemoOptions.tau, duration_s=DemoOptions.duration_s, reps=DemoOptions.reps)
    if short:
        base.update(SHORT)
    given = {"tests": tests, "tau": tau, "duration_s": duration, "reps": reps}
    base.update({k: v for k, v in given.items() if v is not None})
    if no_model:
        model = None
    elif model is None and (DEFAULT_MODEL_DIR / "model_card.json").is_file():
        model = DEFAULT_MODEL_DIR
    elif model is not None and not (model / "model_card.json").is_file():
        raise ConfigError(f"--model {model} has no model_card.json (build the default model with `make model`)")
    options = DemoOptions(model=model, data=data or upworthy_csv(), seed=seed, out_dir=out_dir,
                          bootstrap=bootstrap, split=split, live=not no_live, **base)
    # The run pulls in numba, confluent-kafka, onnxruntime and matplotlib: imported here so that
    # `lola --help` and a bad argument stay fast (the layering test reads this import too).
    from lola.demo.run import Demo

    typer.echo(str(Demo(options).run()))


def register(app: typer.Typer) -> None:
    """Add ``lola demo`` to the root app."""
    app.command("demo")(demo)
