"""The worker's Prometheus metrics, as the demo's live view reads them.

The names are those :class:`lola.stream.observability.WorkerMetrics` registers
(``tests/demo`` checks that they still are).
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

RECORDS = "lola_records_total"
RECORDS_PER_S = "lola_events_per_second"
LAG = "lola_consumer_lag"
DECISIONS = "lola_decisions_total"
DEAD_LETTERS = "lola_dead_letters_total"
LIVE_METRICS = (RECORDS, RECORDS_PER_S, LAG, DECISIONS, DEAD_LETTERS)


def scrape(url: str, timeout_s: float = 2.0) -> dict[str, float]:
    """Prometheus text from ``url``: each sample name summed over its label sets (OSError if unreachable)."""
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback URL we built
        text = resp.read().decode("utf-8", "replace")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if math.isfinite(sample.value):
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    """Whether ``url`` answers 2xx (the worker's /readyz)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback URL we built
            return 200 <= resp.status < 300
    except (OSError, urllib.error.URLError):
        return False
