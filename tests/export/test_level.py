"""The week level and the ``level_deviation`` target: pure NumPy parts, then a tiny model end to end."""

from __future__ import annotations

import csv
import datetime as dt
import json

import numpy as np
import pytest

from lola.data.upworthy import Package
from lola.errors import DataError
from lola.export.data import TargetScaling, build_examples
from lola.export.level import WeekLevel, fit_package_level, fit_week_level, week_index


def _slow_level(centre, weeks, ctr, imps, bw):
    """Twin of the vectorised kernel average: one explicit sum per centre."""
    num = den = 0.0
    for w, y, n in zip(weeks, ctr, imps):
        k = np.exp(-0.5 * ((centre - w) / bw) ** 2) * n
        num += k * y
        den += k
    return num / den


def test_week_index_is_iso_and_continuous():
    assert week_index(201401) == dt.date.fromisocalendar(2014, 1, 1).toordinal() / 7
    assert week_index(201402) - week_index(201401) == pytest.approx(1.0)
    assert week_index(201501) - week_index(201452) == pytest.approx(1.0)  # across a year boundary
    assert week_index(201353) - week_index(201352) == pytest.approx(1.0)  # 2013 has no ISO week 53
    assert np.isnan(week_index(None)) and np.isnan(week_index(201400)) and np.isnan(week_index(201460))


def test_levels_match_the_slow_twin_and_clamp_outside_the_range():
    rng = np.random.default_rng(0)
    weeks = rng.integers(0, 30, size=200).astype(float) + 1000.0
    ctr = 0.01 + 0.001 * (weeks - 1000.0) + rng.normal(0, 0.001, 200)
    imps = rng.integers(100, 5000, size=200).astype(float)
    level, report = fit_week_level(weeks, ctr, imps)
    assert report["chosen_by"].startswith("no tune data")
    assert len(level.levels) == 30 and level.first_week == 1000.0
    for i in (0, 7, 29):
        assert level.levels[i] == pytest.approx(_slow_level(1000.0 + i, weeks, ctr, imps, level.bandwidth), rel=1e-12)
    got = level(np.array([990.0, 1000.0, 1029.0, 1100.0, np.nan]))
    assert got[0] == level.levels[0] and got[2] == got[3] == level.levels[-1]
    assert got[4] == pytest.approx(np.sum(imps * ctr) / np.sum(imps))
    assert np.all(level(None, 3) == level.latest)
    assert WeekLevel.from_dict(json.loads(json.dumps(level.to_dict()))) == level


def test_bandwidth_is_chosen_on_tune_data():
    # A level that jumps every week: the narrowest kernel must win on held-out packages of the same weeks.
    weeks = np.repeat(np.arange(40.0), 20)
    ctr = np.where(weeks % 2 == 0, 0.01, 0.03)
    imps = np.full(weeks.shape, 1000.0)
    level, report = fit_week_level(weeks, ctr, imps, weeks, ctr, imps)
    assert level.bandwidth == min(float(b) for b in report["tune_mse_by_bandwidth"])
    # A flat level: every bandwidth is equally good, the choice is still one of the candidates, and levels are flat.
    flat, _ = fit_week_level(weeks, np.full(weeks.shape, 0.02), imps, weeks, np.full(weeks.shape, 0.02), imps)
    np.testing.assert_allclose(flat.levels, 0.02)


def test_week_level_needs_weeks_and_a_readable_table():
    with pytest.raises(DataError, match="test_week"):
        fit_week_level(np.array([np.nan, 1.0]), np.array([0.1, 0.2]), np.array([1.0, 1.0]))
    with pytest.raises(DataError, match="week level"):
        WeekLevel.from_dict({"levels": []})


def _pkg(test, headline, imps, clicks, week=201401):
    return Package(test, "e", headline, imps, clicks, test_week=week)


def test_examples_carry_test_means_sizes_and_weeks():
    packages = [_pkg("a", "x", 1000, 10), _pkg("a", "y", 1000, 30), _pkg("b", "z", 500, 5, week=201405),
                _pkg("b", "z", 500, 15, week=201403)]
    ex = build_examples(packages)
    assert ex.headlines == ("x", "y", "z")
    np.testing.assert_allclose(ex.test_means, [0.02, 0.02, 0.02])
    np.testing.assert_allclose(ex.deviation, [-0.01, 0.01, 0.0])
    assert list(ex.test_sizes) == [2, 2, 1]
    assert ex.test_weeks == (201401, 201401, 201403)  # the earliest week of the headline
    sub = ex.subset(np.array([2]))
    assert sub.test_weeks == (201403,) and list(sub.test_sizes) == [1]


def test_level_deviation_scaling_standardises_deviations():
    packages = [_pkg("a", "x", 1000, 10), _pkg("a", "y", 1000, 30), _pkg("b", "u", 1000, 40), _pkg("b", "v", 1000, 60)]
    ex = build_examples(packages, weight_by_impressions=False)
    level, _ = fit_package_level(packages)
    s = TargetScaling.fit_examples(ex, "level_deviation", level)
    assert s.kind == "level_deviation" and s.mean == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(s.target(ex), [-1, 1, -1, 1])
    assert s.to_dict()["week_level"]["levels"] == list(level.levels)
    assert TargetScaling.fit_examples(ex, "ctr").kind == "standardize"
    with pytest.raises(DataError, match="needs a week level"):
        TargetScaling.fit_examples(ex, "level_deviation")


# --------------------------------------------------------------------------- tiny model end to end

LEVEL_BY_WEEK = {201401: 0.01, 201402: 0.05}


@pytest.fixture(scope="module")
def drifting_csv(tmp_path_factory):
    """Tests alternate between a low and a high CTR week; within a test, 'dog' headlines do better."""
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("drift") / "packages.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["clickability_test_id", "eyecatcher_id", "headline", "impressions", "clicks", "test_week"])
        for t in range(30):
            week = 201401 + t % 2
            for h in range(3):
                dog = h == 0
                ctr = LEVEL_BY_WEEK[week] + (0.01 if dog else -0.005)
                imps = 4000
                w.writerow([f"t{t:03d}", "e", f"{'dog' if dog else 'cat'} story {t} {h}", imps,
                            int(rng.binomial(imps, ctr)), week])
    return path


@pytest.fixture(scope="module")
def exported_deviation(tmp_path_factory, tiny_base, drifting_csv):
    from lola.export.config import make_config
    from lola.export.onnx_export import export_model
    from lola.export.train import train

    root = tmp_path_factory.mktemp("tiny-dev")
    config = make_config("quick", max_steps=3, min_impressions=0, train_limit=None, lora_last_layers=None,
                         learning_rate=1e-2, target="level_deviation")
    state = train(drifting_csv, root / "train", config, base=str(tiny_base), progress=False)
    assert state["target_scaling"]["kind"] == "level_deviation"
    assert state["week_level_fit"]["chosen_by"].startswith("tune split")
    export_model(root / "train", root / "model", ())
    return root / "model"


def test_served_prior_adds_the_level_of_the_week(exported_deviation, drifting_csv, tmp_path):
    from lola.export.scoring import score_csv
    from lola.export.serve import OnnxPriorModel

    model = OnnxPriorModel(exported_deviation)
    card = model.card
    assert card.target == "level_deviation" and model.week_level is not None
    texts = ["dog story", "cat story"]
    z = model.raw_scores(texts)
    lo = model.predict(texts, test_weeks=[201401, 201401])
    hi = model.predict(texts, test_weeks=[201402, 201402])
    latest = model.predict(texts)
    level = model.week_level
    np.testing.assert_allclose(lo, np.clip(level(np.array([week_index(201401)] * 2)) + model.mean + model.std * z, 0, 1))
    np.testing.assert_allclose(latest, np.clip(level.latest + model.mean + model.std * z, 0, 1))
    # The train split's high week really is higher, and the within-test difference is the same in both weeks.
    assert np.all(hi > lo)
    np.testing.assert_allclose(hi - lo, (hi - lo)[0])
    with pytest.raises(DataError, match="test weeks"):
        model.predict(texts, test_weeks=[201401])

    # `lola priors score` uses each row's test_week.
    out = score_csv(exported_deviation, drifting_csv, tmp_path / "priors.csv")
    with (tmp_path / "priors.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    with drifting_csv.open() as fh:
        src = list(csv.DictReader(fh))
    assert out["rows"] == len(rows) == len(src)
    expected = model.predict([r["headline"] for r in src], test_weeks=[int(r["test_week"]) for r in src])
    np.testing.assert_allclose([float(r["prior_ctr"]) for r in rows], expected, rtol=1e-6)


def test_readout_of_a_deviation_model_adds_the_week_level(exported_deviation, drifting_csv, tmp_path):
    """The refitted readout predicts the within-test deviation; serving adds the week level as for the head."""
    import json
    import shutil

    from lola.export.readout import fit_readout
    from lola.export.serve import OnnxPriorModel

    model_dir = tmp_path / "model"
    shutil.copytree(exported_deviation, model_dir)
    entry = fit_readout(model_dir, drifting_csv)
    assert entry["target"] == "level_deviation"
    model = OnnxPriorModel(model_dir)
    readout = json.loads((model_dir / "readout.json").read_text())
    texts = ["dog story", "cat story"]
    emb = model.embed(texts).astype(np.float64)
    deviation = emb @ np.array(readout["weights"]) + readout["bias"]
    for week in (201401, 201402):
        level = model.week_level(np.array([week_index(week)] * 2))
        np.testing.assert_allclose(model.predict(texts, test_weeks=[week, week]),
                                   np.clip(level + deviation, 0, 1), rtol=0, atol=1e-9)
    # fitted on every training headline: 'dog' headlines beat 'cat' ones inside a test
    assert deviation[0] > deviation[1]
