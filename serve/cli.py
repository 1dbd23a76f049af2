"""``lola serve``: the HTTP rank/reward API on uvicorn (heavy imports inside the command)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lola.errors import ConfigError


def serve(
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help="Kafka bootstrap HOST:PORT (default: $KAFKA_BOOTSTRAP_SERVERS)"),
    port: Optional[int] = typer.Option(None, "--port", help="HTTP port (default: $LOLA_SERVE_PORT, 8080)"),
    host: Optional[str] = typer.Option(None, "--host", help="listen address (default: $LOLA_SERVE_HOST, 0.0.0.0)"),
    settings_file: Optional[Path] = typer.Option(None, "--settings", help="env-style settings file"),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed of the draws and event ids (default: from the OS)"),
) -> None:
    """Serve POST /rank and /reward from the snapshots topic (needs LOLA_SERVE_API_KEYS)."""
    import uvicorn

    from lola.client.edge import EdgeAllocator
    from lola.serve.app import create_app
    from lola.stream.settings import StreamSettings

    overrides = {k: v for k, v in (("bootstrap_servers", bootstrap), ("serve_port", port), ("serve_host", host))
                 if v is not None}
    s = StreamSettings.load(settings_file, **overrides)
    keys = [k.strip() for k in (s.serve_api_keys.get_secret_value() if s.serve_api_keys else "").split(",") if k.strip()]
    if not keys:
        raise ConfigError("lola serve needs LOLA_SERVE_API_KEYS (comma-separated API keys)")
    s.require_bootstrap()
    edge = EdgeAllocator(settings=s, seed=seed)
    try:
        app = create_app(edge, keys, s.serve_rate_per_s, s.serve_rate_burst, s.serve_issued_max)
        uvicorn.run(app, host=s.serve_host, port=s.serve_port, log_level="warning", access_log=False)
    finally:
        edge.close()


def register(app: typer.Typer) -> None:
    """Add ``lola serve`` to the root app."""
    app.command("serve")(serve)
