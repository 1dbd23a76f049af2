"""Where shared, read-only material lives.

Tests, benchmarks and the CLI read ``shared/data`` through one setting:
``LOLA_SHARED_DATA`` if set, else the ``shared/data`` folder beside the
repository (``../shared/data`` from its root), looked up from the current
directory and from this file.
"""

from __future__ import annotations

import os
from pathlib import Path

from lola.errors import DataError

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """Return the shared data folder, or raise :class:`DataError` naming where we looked."""
    env = os.environ.get("LOLA_SHARED_DATA")
    if env:
        path = Path(env)
        if not path.is_dir():
            raise DataError(f"LOLA_SHARED_DATA={env} is not a directory")
        return path
    tried = []
    for base in (Path.cwd(), REPO_ROOT):
        for parent in (base, *base.parents):
            candidate = parent.parent / "shared" / "data"
            tried.append(candidate)
            if candidate.is_dir():
                return candidate
            candidate = parent / "shared" / "data"
            if candidate.is_dir():
                return candidate
    raise DataError("shared data folder not found; set LOLA_SHARED_DATA (looked beside the repository)")


def upworthy_csv() -> Path:
    """The default Upworthy development CSV."""
    return shared_data_dir() / "upworthy" / "upworthy-dev-packages.csv"
