"""``lola variants generate --publish`` and ``--from-experiment`` against the real broker and a worker:
published candidates become variants, and their texts come back from the snapshot."""

from __future__ import annotations

import time

import pytest

from lola.errors import ConfigError
from lola.generation.cli import existing_from_snapshot, publish


@pytest.mark.broker
def test_published_candidates_are_registered_and_read_back(stream_settings, thread_worker):
    s = stream_settings(constant_prior=0.05)
    w = thread_worker(s)
    with pytest.raises(ConfigError, match="no snapshot of that experiment"):
        existing_from_snapshot("exp-gen", None, settings=s)
    top = [{"text": "Dogs Love Snow"}, {"text": "A Priest Wins The Debate"}]
    ids = publish("exp-gen", top, None, settings=s)
    assert len(set(ids)) == 2 and all(i.startswith("gen-") for i in ids)
    deadline = time.monotonic() + 60
    texts: list[str] = []
    while time.monotonic() < deadline:
        try:
            texts = existing_from_snapshot("exp-gen", None, settings=s)
        except ConfigError:
            texts = []
        if len(texts) == 2:
            break
        time.sleep(0.3)
    assert sorted(texts) == ["A Priest Wins The Debate", "Dogs Love Snow"]
    w.stop()
