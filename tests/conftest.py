"""Session-wide fixtures. Broker fixtures live in tests/stream/conftest.py."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def upworthy_csv():
    from lola.paths import upworthy_csv

    path = upworthy_csv()
    if not path.is_file():
        pytest.fail(f"shared Upworthy data missing at {path}")
    return path
