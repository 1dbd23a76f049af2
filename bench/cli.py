"""CLI commands of lola.bench: ``lola bench kernels|stream|priors|soak|stats|ope|checkpoints``.

Each benchmark module owns its command: it exposes ``register(bench_app)`` and keeps
its heavy imports inside the command body.
"""

from __future__ import annotations

import typer

bench_app = typer.Typer(
    help="Benchmarks: each prints JSON with absolute figures and ratios against a peer.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add ``lola bench ...`` to the root app."""
    from lola.bench import (checkpoint_bench, kernels_bench, lifecycle_bench, ope_bench, priors_bench, serve_bench, soak,
                            stats_bench, stream_bench)

    for module in (kernels_bench, stream_bench, priors_bench, soak, stats_bench, ope_bench, serve_bench,
                   checkpoint_bench, lifecycle_bench):
        module.register(bench_app)
    app.add_typer(bench_app, name="bench")
