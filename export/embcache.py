"""A file cache of the exported network's outputs (score and embedding) per model text.

Fitting and comparing readouts needs the embedding of every train, tune and test headline,
which is one forward pass of the 135M network each (minutes on a 2-core CPU); the fits
themselves take seconds. The cache stores ``(text, z, embedding)`` rows in one ``.npz``
keyed by the sha256 of the ONNX file that produced them (the card's record of that file),
so a cache of another model or variant is never read: it is rebuilt instead. Rows are
looked up by the exact text the network saw (headline, or headline + context).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger("lola.export.embcache")


def _key(prior) -> str:
    name = prior.card.variants[prior.variant]
    return f"{prior.card.files[name].sha256}:{prior.text_mode}"


def cached_outputs(prior, headlines: Sequence[str], contexts: Sequence[str] | None,
                   path: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    """``prior.network_outputs(headlines, contexts)``, served from and added to the cache at ``path``.

    ``path=None`` runs the network without a cache. Each variant has its own file beside ``path``
    (``emb.npz`` -> ``emb.fp32.npz``, ``emb.int8.npz``). The file is replaced atomically.
    """
    if path is None:
        return prior.network_outputs(headlines, contexts)
    path = Path(path)
    path = path.with_name(f"{path.name.removesuffix('.npz')}.{prior.variant}.npz")
    texts = prior._texts(headlines, contexts)
    key = _key(prior)
    known: dict[str, int] = {}
    z_old = np.zeros(0)
    emb_old = np.zeros((0, int(prior.embedding_dim)), dtype=np.float32)
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) == key:
                known = {t: i for i, t in enumerate(data["texts"].tolist())}
                z_old, emb_old = data["z"], data["embedding"]
            else:
                log.info("embedding cache %s belongs to another model; rebuilding it", path)
    missing = sorted({t for t in texts if t not in known})
    if missing:
        # network_outputs prepares texts itself; pass the originals of the missing ones
        originals = {}
        for t, h, c in zip(texts, headlines, contexts or [""] * len(texts)):
            originals.setdefault(t, (h, c))
        z_new, emb_new = prior.network_outputs([originals[t][0] for t in missing],
                                               [originals[t][1] for t in missing])
        for i, t in enumerate(missing):
            known[t] = len(z_old) + i
        z_old = np.concatenate([z_old, z_new])
        emb_old = np.concatenate([emb_old, emb_new.astype(np.float32)])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        order = sorted(known, key=known.get)
        np.savez(tmp, key=np.array(key), texts=np.array(order), z=z_old, embedding=emb_old)
        os.replace(tmp, path)
        log.info("embedding cache %s: %d new rows, %d in all", path, len(missing), len(known))
    rows = np.array([known[t] for t in texts], dtype=np.int64)
    return z_old[rows].astype(np.float64), emb_old[rows]
