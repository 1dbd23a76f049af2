"""What every command that talks to the broker shares: option help texts, settings with a topic prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

BOOTSTRAP_HELP = "Kafka bootstrap HOST:PORT (default: $KAFKA_BOOTSTRAP_SERVERS)"
SETTINGS_HELP = "env-style settings file (default: $LOLA_SETTINGS_FILE)"


def load_settings(settings_file: Optional[Path] = None, **overrides: Any):
    """StreamSettings from the environment, an optional env-style file and explicit overrides."""
    from lola.stream.settings import StreamSettings

    return StreamSettings.load(settings_file, **overrides)


def topics(prefix: Optional[str], events_topic: Optional[str] = None) -> dict:
    """Topic-name overrides for ``--topic-prefix`` (every topic) and ``--events-topic``."""
    out = {}
    if prefix:
        out = {f"{name}_topic": f"{prefix}.{name}" for name in ("events", "decisions", "snapshots", "state",
                                                                  "deadletter")}
    if events_topic:
        out["events_topic"] = events_topic
    return out
