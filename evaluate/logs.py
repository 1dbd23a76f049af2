"""Logged feedback from the Open Bandit Dataset (the worker's own topics: :mod:`lola.stream.decision_log`).

**Open Bandit Dataset** (``--log obd:DIR``, DIR holding ``all.csv`` and ``item_context.csv``):
one round per row, action ``item_id``, reward ``click``, propensity ``propensity_score``; the
``position`` column is ignored (every target policy here is position-independent).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from lola.errors import LolaError
from lola.stream.decision_log import Log


def read_obd(folder: str | Path) -> Log:
    """One OBD campaign folder (``all.csv``, ``item_context.csv``) as a log of one experiment ``obd``."""
    folder = Path(folder)
    log_file, items_file = folder / "all.csv", folder / "item_context.csv"
    for f in (log_file, items_file):
        if not f.is_file():
            raise LolaError(f"{f} not found (an Open Bandit Dataset folder holds all.csv and item_context.csv)")
    with items_file.open(newline="") as fh:
        n_items = sum(1 for _ in csv.DictReader(fh))
    with log_file.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    try:
        action = np.array([int(r["item_id"]) for r in rows], dtype=np.int64)
        reward = np.array([float(r["click"]) for r in rows])
        pscore = np.array([float(r["propensity_score"]) for r in rows])
        ts = np.arange(len(rows), dtype=float)
    except (KeyError, ValueError) as exc:
        raise LolaError(f"{log_file}: not the Open Bandit Dataset format ({exc})") from None
    if len(rows) == 0 or action.min() < 0 or action.max() >= n_items:
        raise LolaError(f"{log_file}: empty, or an item_id outside the {n_items} items of item_context.csv")
    return Log(["obd"] * len(rows), action, reward, pscore, ts, {"obd": [str(i) for i in range(n_items)]},
               {"decisions": len(rows), "joined": len(rows)})
