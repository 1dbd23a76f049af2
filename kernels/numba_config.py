"""The one place that sets Numba compilation flags for every kernel.

``cache=True`` writes compiled machine code beside the sources so a worker
restart does not pay the JIT again. ``fastmath`` is limited to flags that keep
NaN/inf semantics, because ``n_aux = inf`` (pure-LLM greedy) and empty arms
(``n = 0``) are legitimate inputs. ``nogil`` lets the stream worker's prior
thread run while a kernel holds the CPU.

Cache caveat: Numba keys a cached function on its own source file only, so the cached
engine in ``core.py`` would not notice an edit to a module it calls (``policies.py``,
``rng.py``, ``adaptive.py``) and would run stale machine code. :func:`drop_stale_cache`
(run on import, before any kernel is compiled) therefore keys the whole cache on a hash
of every kernel source: when the hash changes, the cached files are deleted.
``LOLA_NUMBA_CACHE=0`` turns caching off altogether.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_KERNELS = Path(__file__).resolve().parent


def drop_stale_cache(folder: Path = _KERNELS) -> bool:
    """Delete ``folder/__pycache__/*.nbi|*.nbc`` if any kernel source changed since they were written.

    Returns True when files were dropped. A read-only install (no writable
    ``__pycache__``) is left alone: Numba then caches elsewhere or not at all.
    """
    digest = hashlib.sha256()
    for src in sorted(folder.glob("*.py")):
        digest.update(src.name.encode() + b"\0" + src.read_bytes())
    stamp = folder / "__pycache__" / "lola_kernels_sources.sha256"
    want = digest.hexdigest()
    try:
        if stamp.exists() and stamp.read_text() == want:
            return False
        dropped = False
        for cached in list(stamp.parent.glob("*.nbi")) + list(stamp.parent.glob("*.nbc")):
            cached.unlink(missing_ok=True)
            dropped = True
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(want)
        return dropped
    except OSError:
        return False

# Contract/reassoc/arcp are safe for our reductions; nnan/ninf are not (see above).
FASTMATH = {"contract", "reassoc", "arcp"}

_CACHE = os.environ.get("LOLA_NUMBA_CACHE", "1") != "0"
if _CACHE:
    drop_stale_cache()

NJIT = dict(cache=_CACHE, fastmath=FASTMATH, nogil=True)
"""Keyword arguments for ``numba.njit`` used by every serial kernel."""

NJIT_PARALLEL = dict(NJIT, parallel=True)
"""For kernels that loop over many experiments with ``numba.prange``."""
