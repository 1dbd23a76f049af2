"""Read the Open Bandit Dataset sample (``shared/data/obd/<policy>/all``): logged decisions with
user features, the item shown, its position, the click and the logging propensity.

Each row becomes a :class:`LoggedDecision` whose ``context`` is a plain dict, as a
``decision_request`` carries it: the four hashed user features as categorical strings and
the user-item affinities as numbers. Featurizing is the worker's job
(:class:`lola.stream.context.Featurizer`, docs/contextual.md); :data:`FEATURE_SPEC` is the
declaration an experiment would send for these logs.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lola.errors import DataError

USER_FIELDS = ("user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3")
#: The ``contextual.features`` setting for these logs: the user features hashed, the first
#: two affinities as numbers (most affinity columns are 0 in the sample).
FEATURE_SPEC: dict[str, Any] = {"version": 1, "categorical": list(USER_FIELDS),
                                "numeric": {"user-item_affinity_0": {"mean": 0.0, "scale": 1.0},
                                            "user-item_affinity_1": {"mean": 0.0, "scale": 1.0}}}


@dataclass(frozen=True)
class LoggedDecision:
    item_id: int
    position: int
    click: int
    propensity: float
    context: dict[str, Any]


def load_obd(folder: Path) -> tuple[list[LoggedDecision], int]:
    """(logged decisions in file order, number of items) of one OBD sample folder."""
    log, items = Path(folder) / "all.csv", Path(folder) / "item_context.csv"
    for path in (log, items):
        if not path.is_file():
            raise DataError(f"Open Bandit Dataset file not found: {path}")
    with items.open(newline="") as fh:
        n_items = sum(1 for _ in csv.DictReader(fh))
    out = []
    with log.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"item_id", "position", "click", "propensity_score", *USER_FIELDS} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{log}: missing column(s) {', '.join(sorted(missing))}")
        affinity = [c for c in reader.fieldnames or () if c.startswith("user-item_affinity_")]
        for i, row in enumerate(reader):
            try:
                ctx: dict[str, Any] = {f: row[f] for f in USER_FIELDS}
                ctx.update({c: float(row[c]) for c in affinity})
                out.append(LoggedDecision(int(row["item_id"]), int(row["position"]), int(row["click"]),
                                          float(row["propensity_score"]), ctx))
            except (TypeError, ValueError) as exc:
                raise DataError(f"{log}: row {i + 1}: {exc}") from None
    for d in out:
        if not (0 <= d.item_id < n_items and 0.0 < d.propensity <= 1.0):
            raise DataError(f"{log}: item_id or propensity out of range ({d.item_id}, {d.propensity})")
    return out, n_items
