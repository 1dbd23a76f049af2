"""The kernel cache is keyed on every kernel source, not only the file of each function."""

from __future__ import annotations

from lola.kernels.numba_config import drop_stale_cache


def test_an_edit_to_any_kernel_source_drops_the_cached_machine_code(tmp_path):
    (tmp_path / "core.py").write_text("engine = 1\n")
    (tmp_path / "policies.py").write_text("index = 1\n")
    cache = tmp_path / "__pycache__"
    assert drop_stale_cache(tmp_path) is False  # first run: nothing cached yet, stamp written
    (cache / "core.engine-1.py311.nbi").write_bytes(b"index")
    (cache / "core.engine-1.py311.1.nbc").write_bytes(b"code")
    assert drop_stale_cache(tmp_path) is False  # unchanged sources keep the cache
    assert len(list(cache.glob("*.nb?"))) == 2
    (tmp_path / "policies.py").write_text("index = 2\n")  # a callee edited, core.py untouched
    assert drop_stale_cache(tmp_path) is True
    assert not list(cache.glob("*.nb?"))
    assert drop_stale_cache(tmp_path) is False
