"""``lola priors score``: a prior CTR for every row of a CSV (torch-free)."""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path

from lola.data.priors import write_priors_csv
from lola.errors import DataError

log = logging.getLogger("lola.export.scoring")


def score_csv(model_dir: str | Path, input_csv: str | Path, output_csv: str | Path,
              variant: str = "auto", provider: str = "auto", cache: str | Path | None = None) -> dict:
    """Write ``headline,prior_ctr`` with one row per input row, in input order.

    Rows with an empty headline get an empty ``prior_ctr`` (counted in the summary),
    so the output still lines up with the input. A model trained on the
    ``level_deviation`` target adds the level of the row's ``test_week`` (archive
    ``YYYYWW``) when the CSV has one, else the most recent level it knows. With ``cache`` (an
    embedding cache, :mod:`lola.export.embcache`, e.g. the one ``lola priors readout`` filled)
    headlines already embedded by this network are not run again; the scores are the same.
    """
    from lola.export.serve import OnnxPriorModel

    input_csv, output_csv = Path(input_csv), Path(output_csv)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with input_csv.open(newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.DictReader(fh)
        if "headline" not in (reader.fieldnames or ()):
            raise DataError(f"{input_csv}: no `headline` column (found {reader.fieldnames})")
        rows = [(r.get("headline") or "", r.get("lede") or "", r.get("excerpt") or "", _week(r.get("test_week")))
                for r in reader]
    model = OnnxPriorModel(model_dir, provider=provider, variant=variant)
    # Score each distinct (headline, context) once: archive CSVs repeat headlines across images.
    from lola.export.text import clean_text

    keys = []
    uses_week = model.week_level is not None
    for headline, lede, excerpt, week in rows:
        context = lede if clean_text(lede) else excerpt
        keys.append((headline, context if model.text_mode == "headline_context" else "", week if uses_week else -1))
    unique = sorted({k for k in keys if k[0].strip()})
    weeks = [None if k[2] < 0 else k[2] for k in unique] if uses_week else None
    if unique and cache is not None:
        from lola.export.embcache import cached_outputs

        z, emb = cached_outputs(model, [k[0] for k in unique], [k[1] for k in unique], cache)
        preds = model.to_ctr(z, weeks, emb)
    else:
        preds = model.predict([k[0] for k in unique], [k[1] for k in unique], weeks) if unique else []
    by_key = dict(zip(unique, preds))
    preds_by_row = [float(by_key[key]) if key in by_key else None for key in keys]
    write_priors_csv(output_csv, [headline for headline, *_ in rows], preds_by_row, fmt=repr)
    empty = preds_by_row.count(None)
    if empty:
        log.warning("%d row(s) with an empty headline got an empty prior_ctr", empty)
    return {"rows": len(rows), "scored_unique": len(unique), "empty_headlines": empty,
            "model_version": model.model_version, "variant": model.variant, "provider": model.provider,
            "out": str(output_csv)}


def _week(text: str | None) -> int:
    """``test_week`` as an int, -1 when missing or unreadable (then the latest level is used)."""
    try:
        return int(float(text)) if text and text.strip() else -1
    except ValueError:
        return -1
