"""The stream worker's default LOLA setting for a new experiment, in one documented place.

A worker does not know how long an experiment will run, so its default ``alpha`` and
``n_aux`` are the one LOLA setting that loses least across horizons on the replay's tune
split (``one_setting_for_all_horizons`` in ``lola replay``'s JSON). The replay writes it
with ``lola replay ... --worker-defaults FILE``; ``worker_defaults.json`` beside this
module is the committed result, with the command that produced it.
:class:`lola.stream.settings.StreamSettings` reads it for ``LOLA_DEFAULT_ALPHA`` and
``LOLA_DEFAULT_N_AUX``; the environment still overrides both.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lola.errors import DataError

DEFAULTS_FILE = Path(__file__).with_name("worker_defaults.json")


def load(path: Path = DEFAULTS_FILE) -> dict[str, Any]:
    """The defaults document; DataError when it is missing or breaks its rules."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"worker defaults {path} unreadable: {exc}") from None
    for key in ("alpha", "n_aux"):
        value = doc.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise DataError(f"worker defaults {path}: {key} must be a finite number >= 0, got {value!r}")
    if doc.get("policy") != "llm2ucb":
        raise DataError(f"worker defaults {path}: policy must be llm2ucb, got {doc.get('policy')!r}")
    return doc


def write(path: Path, setting: dict[str, Any], provenance: str) -> Path:
    """Write a defaults document from a replay's ``one_setting_for_all_horizons``."""
    params = setting["params"]
    doc = {"policy": "llm2ucb", "alpha": float(params["alpha"]), "n_aux": float(params["n_aux"]), "from": provenance,
           "tune_shortfall_pct_mean": setting["tune_shortfall_pct_mean"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    load(path)  # the file just written must read back
    return path


WORKER_DEFAULTS = load()
