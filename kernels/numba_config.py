"""The one place that sets Numba compilation flags for every kernel.

``cache=True`` writes compiled machine code beside the sources so a worker
restart does not pay the JIT again. ``fastmath`` is limited to flags that keep
NaN/inf semantics, because ``n_aux = inf`` (pure-LLM greedy) and empty arms
(``n = 0``) are legitimate inputs. ``nogil`` lets the stream worker's prior
thread run while a kernel holds the CPU.

Cache caveat: Numba keys a cached function on its own source file only, so the cached
engine in ``core.py`` does not notice an edit to a module it calls (``policies.py``,
``rng.py``, ``adaptive.py``). After editing one of those, delete
``kernels/__pycache__/*.nb[ic]`` or run with ``LOLA_NUMBA_CACHE=0``.
"""

from __future__ import annotations

import os

# Contract/reassoc/arcp are safe for our reductions; nnan/ninf are not (see above).
FASTMATH = {"contract", "reassoc", "arcp"}

NJIT = dict(cache=os.environ.get("LOLA_NUMBA_CACHE", "1") != "0", fastmath=FASTMATH, nogil=True)
"""Keyword arguments for ``numba.njit`` used by every serial kernel."""

NJIT_PARALLEL = dict(NJIT, parallel=True)
"""For kernels that loop over many experiments with ``numba.prange``."""
