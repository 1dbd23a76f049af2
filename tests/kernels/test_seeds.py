"""``mix_seed``: the worker's per-batch seeds from ids and counters (SplitMix64 multipliers)."""

from __future__ import annotations

from lola.kernels.rng import mix_seed


def _restated(*parts: int) -> int:
    """The rule in plain Python integers, as the stream processor had it before it moved here."""
    z = 0x9E3779B97F4A7C15
    for p in parts:
        z = (z ^ (p & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        z ^= z >> 31
    return z & 0x7FFFFFFFFFFFFFFF


def test_mix_seed_matches_its_restatement_and_is_pinned():
    for parts in ((), (0,), (7, 3, 1000), (2**64 + 5, -1), (123456789, 0, 2**63)):
        assert mix_seed(*parts) == _restated(*parts)
        assert 0 <= mix_seed(*parts) < 2**63
    # Pinned, so a refactor cannot change the worker's decisions silently.
    assert mix_seed(7, 3, 1000) == 6505807712208225144
    assert mix_seed(0, 1, 2) != mix_seed(0, 2, 1)
