"""BanditState compaction (lola.kernels.compaction): removal keeps every other statistic exact."""

import numpy as np

from lola.kernels import BanditState, ExperimentParams, select, update


def _filled(n_exp: int, arms: int, seed: int = 0) -> BanditState:
    rng = np.random.default_rng(seed)
    st = BanditState(4, 2)
    p = ExperimentParams.from_dict({"policy": "llm2ucb"})
    for _ in range(n_exp):
        r = st.add_experiment(p)
        for _ in range(arms):
            st.add_arm(r, prior_ctr=float(rng.uniform(0.01, 0.2)))
    rows = rng.integers(0, n_exp, 500)
    slots = rng.integers(0, arms, 500)
    update(st, rows, slots, np.ones(500), (rng.random(500) < 0.1).astype(float), np.zeros(500))
    return st


def _arm(st: BanditState, row: int) -> tuple:
    k = int(st.n_arms[row])
    return (st.impressions[row, :k].tolist(), st.clicks[row, :k].tolist(), st.mu_aux[row, :k].tolist(),
            st.active[row, :k].tolist(), st.exp_f[row].tolist(), st.ucb[row, :, :k].tolist())


def test_remove_experiment_moves_the_last_row_and_keeps_its_statistics():
    st = _filled(10, 3)
    before = {r: _arm(st, r) for r in range(10)}
    assert st.remove_experiment(2) == 9
    assert st.n_experiments == 9 and _arm(st, 2) == before[9]
    assert all(_arm(st, r) == before[r] for r in (0, 1, 3, 8))
    assert st.remove_experiment(8) is None
    chosen, _ = select(st, np.arange(8, dtype=np.int64), 7)  # the kernels run on the compacted state
    assert ((0 <= chosen) & (chosen < 3)).all()


def test_remove_arm_shifts_later_arms_and_shrink_returns_memory():
    st = _filled(3, 5)
    row = _arm(st, 1)
    st.remove_arm(1, 1)
    after = _arm(st, 1)
    assert after[0] == row[0][:1] + row[0][2:] and after[2] == row[2][:1] + row[2][2:]
    assert after[5] == [u[:1] + u[2:] for u in row[5]]
    big = _filled(300, 20)
    assert big.capacity_experiments >= 300 and big.capacity_arms >= 20
    for _ in range(299):
        big.remove_experiment(0)
    for _ in range(18):
        big.remove_arm(0, 0)
    assert big.capacity_experiments == 64 and big.capacity_arms == 4
    assert big.nbytes() == BanditState(64, 4).nbytes()



def test_removing_experiments_alone_gives_the_old_arrays_back():
    """Only rows removed: a slice of leading rows is contiguous, so the shrunk arrays must be
    copies (a view would keep the whole grown array alive while looking small)."""
    big = _filled(300, 2)
    for _ in range(299):
        big.remove_experiment(0)
    assert big.capacity_experiments == 64
    arrays = {name: a for name, a in vars(big).items() if isinstance(a, np.ndarray)}
    assert [name for name, a in arrays.items() if a.base is not None] == []
    assert big.nbytes() == BanditState(64, big.capacity_arms).nbytes()

def test_set_params_keeps_counts_and_set_arm_active_toggles_serving():
    st = _filled(2, 2)
    counts = st.impressions[0, :2].copy()
    st.set_params(0, ExperimentParams.from_dict({"policy": "llm2ucb", "alpha": 0.3}))
    assert st.params(0).alpha == 0.3 and (st.impressions[0, :2] == counts).all()
    st.set_arm_active(0, 0, False)
    chosen, _ = select(st, np.zeros(20, dtype=np.int64), 1)
    assert set(chosen.tolist()) == {1}
    st.set_arm_active(0, 0, True)
    assert st.active[0, 0]


def test_rows_of_incremental_checkpoints_copy_compare_and_put_back_exactly():
    import pytest

    from lola.errors import KernelInputError
    from lola.kernels.compaction import SERIALISED

    src = _filled(6, 3, seed=1)
    ref = src.copy_rows()
    assert src.changed_rows(ref).tolist() == []
    src.mu_aux[2, 0] = np.nan
    ref = src.copy_rows()
    assert src.changed_rows(ref).tolist() == []  # bitwise: NaN equals itself
    src.impressions[4, 1] += 1.0
    src.ucb[1, 0, 0] = -0.0 if src.ucb[1, 0, 0] == 0.0 else 0.0  # a sign of zero is a change too
    assert src.changed_rows(ref).tolist() == [1, 4]
    # a copy that then lost its last row: put the changed rows back and the row count down
    dst = BanditState.from_bytes(src.to_bytes())
    moved = src.remove_experiment(0)  # the last row (5) moves into row 0
    assert moved == 5
    rows = [0, 1, 4]
    dst.put_rows(src.n_experiments, rows, src.take_rows(rows), [src.params(r) for r in rows])
    assert dst.n_experiments == src.n_experiments == 5
    for name in SERIALISED:
        np.testing.assert_array_equal(getattr(dst, name)[:5], getattr(src, name)[:5])
        assert not np.any(getattr(dst, name)[5:])  # cleared beyond the row count, as from_bytes leaves it
    before = {name: getattr(dst, name).copy() for name in SERIALISED}
    bad = src.take_rows([1])
    bad["clicks"] = bad["clicks"][:, :1]
    with pytest.raises(KernelInputError, match="clicks"):
        dst.put_rows(5, [1], bad, [src.params(1)])
    with pytest.raises(KernelInputError, match="beyond the old row count"):
        dst.put_rows(6, [1], src.take_rows([1]), [src.params(1)])
    with pytest.raises(KernelInputError):
        dst.take_rows([5])
    for name in SERIALISED:  # refused before anything changed
        np.testing.assert_array_equal(getattr(dst, name), before[name])
