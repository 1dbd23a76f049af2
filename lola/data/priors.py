"""The priors CSV, ``headline,prior_ctr``: what ``lola priors score`` writes and ``lola replay``
and ``lola demo`` read. The one reader and the one writer of that format.

Headlines are stripped on reading, as :mod:`lola.data.upworthy` strips them (the
archive has trailing spaces), so a prior is found by the text a test carries.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Callable, Iterable

from lola.errors import ConfigError, DataError

PRIOR_COLUMNS = ("headline", "prior_ctr")


def read_priors_csv(path: str | Path) -> dict[str, float]:
    """``{headline: prior CTR}``; extra columns are ignored. A bad row is an error, never skipped."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--priors file not found: {path}")
    out: dict[str, float] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or ())
        if not set(PRIOR_COLUMNS) <= cols:
            raise DataError(f"{path}: priors CSV needs columns {','.join(PRIOR_COLUMNS)}; found {sorted(cols)}")
        for row_number, row in enumerate(reader, start=2):
            text = (row["headline"] or "").strip()
            try:
                value = float(row["prior_ctr"])
            except (TypeError, ValueError):
                raise DataError(f"{path}: row {row_number}: prior_ctr={row['prior_ctr']!r} is not a number") from None
            if not text:
                raise DataError(f"{path}: row {row_number}: empty headline")
            if not math.isfinite(value) or not 0.0 <= value <= 1.0:
                raise DataError(f"{path}: row {row_number}: prior_ctr={value} outside [0, 1]")
            out[text] = value
    if not out:
        raise DataError(f"{path}: no priors")
    return out


def write_priors_csv(path: str | Path, headlines: Iterable[str], priors: Iterable[float | None],
                     fmt: Callable[[float], str] = "{:.8g}".format) -> Path:
    """Write ``headline,prior_ctr`` rows in the given order (a ``None`` prior is an empty cell).

    Written to a temporary file and renamed, so a reader never sees half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(PRIOR_COLUMNS)
        for h, p in zip(headlines, priors):
            w.writerow([h, "" if p is None else fmt(float(p))])
    tmp.replace(path)
    return path
