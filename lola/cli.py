"""The ``lola`` command line.

The top of the layering (see ``tests/test_layering.py``): nothing imports this
module. Each area registers its own commands and keeps heavy imports (numba,
torch, onnxruntime, confluent-kafka) inside the command bodies so ``lola --help``
and bad-argument errors stay fast. Any :class:`~lola.errors.LolaError` becomes a
one-line message and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys

import typer
from typer.exceptions import TyperException

from lola import __version__, config_reference, demo
from lola.bench import cli as bench_cli
from lola.comply import cli as comply_cli
from lola.errors import LolaError
from lola.evaluate import cli as evaluate_cli
from lola.export import cli as export_cli
from lola.report import cli as report_cli
from lola.generation import cli as generation_cli
from lola.replay import cli as replay_cli
from lola.serve import cli as serve_cli
from lola.stream import cli as stream_cli
from lola.stream.memory import reexec_with_glibc_malloc

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
    typer.echo(__version__)


# Order of `lola --help`: the worker's commands first, then the tools.
for _area in (stream_cli, serve_cli, demo, evaluate_cli, report_cli, export_cli, bench_cli, replay_cli, config_reference,
              comply_cli, generation_cli):
    _area.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    if argv is None and sys.argv[1:2] == ["worker"]:
        # the worker's memory returns to the system after evictions only with glibc's
        # allocator for every object, which must be chosen before the interpreter starts
        reexec_with_glibc_malloc()
    # standalone_mode=False: usage errors are raised instead of printed as Typer's boxed,
    # multi-line panel, so a bad argument gets the same one-line message as a LolaError.
    try:
        code = app(args=argv, standalone_mode=False, prog_name="lola")
    except TyperException as exc:  # usage errors: no such command/option, bad value
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "lola"
        typer.echo(f"lola: error: {exc.format_message()} (see '{where} --help')", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("lola: interrupted", err=True)
        sys.exit(130)
    except LolaError as exc:
        typer.echo(f"lola: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("lola: interrupted", err=True)
        sys.exit(130)
    if isinstance(code, int) and code != 0:
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
