"""The ``lola`` command line.

Each area registers its own commands, and keeps heavy imports (numba, torch,
onnxruntime, confluent-kafka) inside the command bodies so ``lola --help`` and
bad-argument errors stay fast. Any :class:`~lola.errors.LolaError` becomes a
one-line message and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys

import typer

from lola.errors import LolaError

app = typer.Typer(
    name="lola",
    help="LLM-assisted bandits (LOLA) for content experiments on Kafka streams.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from lola import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the installed lola-stream version and exit.")) -> None:
    """LLM-assisted bandits (LOLA) for content experiments on Kafka streams."""


@app.command()
def version() -> None:
    """Print the installed lola-stream version."""
    from lola import __version__

    typer.echo(__version__)


def _register() -> None:
    # Imported here, not at module top, so a broken area cannot hide the others' help.
    from lola.bench import cli as bench_cli
    from lola.export import cli as export_cli
    from lola.stream import cli as stream_cli
    from lola import demo as demo_cli
    from lola import ops as ops_cli

    for module in (stream_cli, export_cli, bench_cli, demo_cli, ops_cli):
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        app(args=argv, standalone_mode=True)
    except LolaError as exc:
        typer.echo(f"lola: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("lola: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
