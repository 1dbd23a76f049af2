"""``SnapshotReader``: the latest policy snapshot per experiment from the compacted snapshots topic."""

from __future__ import annotations

from typing import Any

from lola.stream.settings import StreamSettings
from lola.stream.snapshot import counts_view, read_snapshots


class SnapshotReader:
    """Reads ``lola.snapshots`` (one definition: :func:`lola.stream.snapshot.read_snapshots`).

    Each call reads the topic to its end and keeps the latest record per experiment
    (what compaction keeps). A snapshot is ``{"experiment_id", "arms": {variant_id:
    {"impressions", "clicks", "conversions", "prior", ...}}, ...}``.
    """

    def __init__(self, bootstrap: str | None = None, settings: StreamSettings | None = None,
                 timeout_s: float = 30.0, **overrides: Any) -> None:
        self.settings = settings or StreamSettings.load(bootstrap_servers=bootstrap, **overrides)
        self.settings.require_bootstrap()
        self.timeout_s = timeout_s

    def read(self) -> dict[str, dict[str, Any]]:
        """``{experiment_id: snapshot}`` for every experiment with a snapshot."""
        return read_snapshots(self.settings, self.timeout_s)

    def experiment(self, experiment_id: str) -> dict[str, Any] | None:
        return self.read().get(experiment_id)

    def counts(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per experiment and variant: impressions, clicks, conversions."""
        return counts_view(self.read())
