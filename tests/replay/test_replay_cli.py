"""`lola replay` end to end on tiny CSVs: CLI, JSON shape, policy names, splits, errors.

Each test simulates a few tests for a few steps, so the whole file runs in seconds
once the kernels are compiled (Numba cache).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lola.replay import protocol as P
from lola.replay.sim import simulate_batch
from lola.cli import app

COLUMNS = ("clickability_test_id", "eyecatcher_id", "headline", "impressions", "clicks")


def write_tests(path, n_tests, prefix, seed):
    """Synthetic Upworthy-style CSV: n_tests tests of 2-4 headlines, CTRs 0.5%-6%."""
    rng = np.random.default_rng(seed)
    truth = {}
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for t in range(n_tests):
            for h in range(int(rng.integers(2, 5))):
                text = f"{prefix} test {t} headline {h}"
                imps = 10_000
                clicks = int(imps * rng.uniform(0.005, 0.06))
                truth[text] = clicks / imps
                w.writerow((f"{prefix}{t:03d}", "eye", text, imps, clicks))
    return truth


def write_priors(path, priors):
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("headline", "prior_ctr"))
        for h, p in priors.items():
            w.writerow((h, p))


@pytest.fixture()
def files(tmp_path):
    data, tune = tmp_path / "data.csv", tmp_path / "tune.csv"
    truth = write_tests(data, 12, "d", 1)
    truth |= write_tests(tune, 8, "t", 2)
    priors = tmp_path / "priors.csv"
    write_priors(priors, truth)  # exact priors
    return data, tune, priors, truth


def invoke(*args):
    return CliRunner().invoke(app, ["replay", *map(str, args)])


def test_cli_json_shape_and_policy_names(files, tmp_path):
    data, tune, priors, _ = files
    plot = tmp_path / "fig7.png"
    res = invoke("--data", data, "--priors", priors, "--tune-data", tune, "--taus", "5,10", "--reps", 2,
                 "--tune-reps", 1, "--json", "--plot", plot, "--no-progress", "--workers", 2)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert set(doc) >= {"results", "improvements", "hyperparameters"}
    names = {r["policy"] for r in doc["results"]}
    assert names == {"E&C", "UCB", "PureLLM", "LOLA", "TS", "LLM-TS", "LLM-LinUCB", "LOLA-EB"}
    assert {r["tau"] for r in doc["results"]} == {5, 10}
    for r in doc["results"]:
        assert r["n_tests"] == 12  # with --tune-data every test of --data is reported
        assert 0.0 <= r["clicks_per_period"] <= 4.0  # at most K clicks per tau impressions
    assert len(doc["improvements"]) == 2 * 8 * 7 // 2
    assert set(doc["improvements"][0]) >= {"tau", "a", "b", "improvement_pct", "p_value", "stars"}
    assert set(doc["hyperparameters"]["5"]["LOLA"]) == {"alpha", "n_aux"}
    assert doc["hyperparameters"]["5"]["PureLLM"] == {"n_aux": None}  # inf, JSON-safe
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_exact_prior_makes_pure_llm_optimal_in_every_world(files):
    """Common random numbers: at step s every policy sees the same click uniform, so the
    arm with the highest true CTR clicks whenever any arm would. PureLLM with an exact
    prior always plays it, so it can never be beaten in any test or rep."""
    data, tune, priors, truth = files
    from lola.replay.priors import read_priors_csv
    from lola.data.upworthy import headline_tests, load_packages

    tests = headline_tests(load_packages(data)[0])
    batch = P.build_batch(tests, read_priors_csv(priors).lookup)
    best = simulate_batch(batch, P.PolicySpec("PureLLM", {"n_aux": float("inf")}), 20, 3, seed=5)
    for name, params in [("UCB", {"alpha": 0.08}), ("LOLA", {"alpha": 0.08, "n_aux": 100.0}),
                         ("E&C", {"explore_fraction": 0.3}), ("TS", {})]:
        other = simulate_batch(batch, P.PolicySpec(name, params), 20, 3, seed=5)
        assert np.all(best >= other), name
        assert other.shape == (12, 3)
    # Different seeds give different worlds; the same seed gives the same world.
    again = simulate_batch(batch, P.PolicySpec("PureLLM", {"n_aux": float("inf")}), 20, 3, seed=5, workers=2)
    assert np.array_equal(best, again)


def test_split_mode_reports_only_the_test_split(files, tmp_path):
    data, tune, priors, _ = files
    res = invoke("--data", data, "--priors", priors, "--taus", "5", "--reps", 1, "--tune-reps", 1,
                 "--policies", "UCB,LOLA", "--json", "--no-progress")
    # 12 synthetic tests split 60/20/20 may leave a side empty: either a clear error or a result.
    if res.exit_code == 0:
        doc = json.loads(res.stdout)
        assert {r["policy"] for r in doc["results"]} == {"UCB", "LOLA"}
    else:
        assert res.exit_code == 2 and "headline tests" in res.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--taus", "5"], "exactly one of --priors"),
        (["--priors", "PRIORS", "--taus", "0,5"], "--taus"),
        (["--priors", "PRIORS", "--reps", "0"], "--reps"),
        (["--priors", "PRIORS", "--policies", "LOLA,Nope"], "unknown policy"),
        (["--priors", "missing.csv"], "--priors file not found"),
    ],
)
def test_bad_arguments_are_one_line_errors(files, args, message, capsys):
    data, _, priors, _ = files
    from lola.cli import main

    args = [str(priors) if a == "PRIORS" else a for a in args]
    with pytest.raises(SystemExit) as exc:
        main(["replay", "--data", str(data), *args, "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lola: error:") and message in err and err.count("\n") == 1, err


def test_synthetic_prior_bad_fraction_is_a_one_line_error(files, tmp_path, capsys):
    data, *_ = files
    from lola.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["replay", "synthetic-prior", "--data", str(data), "--out", str(tmp_path / "x.csv"),
              "--reversed-fraction", "1.5"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--reversed-fraction must be in [0, 1]" in err and err.count("\n") == 1


def test_bai_bad_radius_is_a_one_line_error(files, capsys):
    data, tune, priors, _ = files
    from lola.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["replay", "bai", "--data", str(data), "--priors", str(priors), "--radius", "kl"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--radius must be one of hoeffding, bernstein" in err and err.count("\n") == 1


def test_missing_headline_prior_is_a_clear_error(files, tmp_path, capsys):
    data, tune, _, truth = files
    partial = tmp_path / "partial.csv"
    write_priors(partial, dict(list(truth.items())[:5]))
    from lola.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["replay", "--data", str(data), "--priors", str(partial), "--tune-data", str(tune), "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "have no prior" in err and err.count("\n") == 1


def test_protocol_arithmetic():
    # Figure 7's caption: two headlines, tau = 100, 1 + 2 clicks -> 0.03.
    assert P.clicks_per_period(np.array([3.0]), 100)[0] == pytest.approx(0.03)
    assert P.parse_taus("50, 100,1000") == (50, 100, 1000)
    assert P.POLICY_NAMES[:7] == ("E&C", "UCB", "PureLLM", "LOLA", "TS", "LLM-TS", "LLM-LinUCB")
    assert len(P.grid("LOLA")) == len(P.ALPHA_GRID) * len(P.N_AUX_GRID)
    assert {s.params["explore_fraction"] for s in P.grid("E&C")} == {0.1, 0.2, 0.3, 0.4, 0.5}


@pytest.mark.parametrize("radius", ["hoeffding", "bernstein"])
def test_bai_subcommand_json(files, radius):
    data, tune, priors, _ = files
    res = invoke("bai", "--data", data, "--priors", priors, "--tune-data", tune, "--reps", 1, "--json", "--radius", radius)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["radius"] == radius
    assert set(doc["curves"]) == {"LLM-BAI", "BAI", "A/B test"}
    assert doc["pure_llm_success_rate"] == 1.0  # exact priors pick the best arm
    for curve in doc["curves"].values():
        for budget, point in curve.items():
            assert 0.0 <= point["success_rate"] <= 1.0
            assert 0 < point["pulls_per_test"] <= int(budget) * 4


def test_synthetic_prior_is_exact_or_rank_reversed_per_test(files, tmp_path):
    data, _, _, truth = files
    from lola.replay.priors import read_priors_csv
    from lola.data.upworthy import headline_tests, load_packages

    tests = headline_tests(load_packages(data)[0])
    kinds = {}
    for frac in (0.0, 0.5, 1.0):
        out = tmp_path / f"synthetic-{frac}.csv"
        res = invoke("synthetic-prior", "--data", data, "--out", out, "--reversed-fraction", frac, "--seed", 3)
        assert res.exit_code == 0, res.output
        table = read_priors_csv(out)
        kinds[frac] = []
        for t in tests:
            prior = table.lookup(t.headlines)
            assert sorted(prior) == pytest.approx(sorted(t.ctrs))  # same values: the level is exact
            exact = np.allclose(prior, t.ctrs)
            reversed_ = np.allclose(prior, np.sort(t.ctrs)[::-1][np.argsort(np.argsort(t.ctrs))])
            assert exact or reversed_
            kinds[frac].append("exact" if exact else "reversed")
    assert set(kinds[0.0]) == {"exact"} and set(kinds[1.0]) == {"reversed"}
    assert set(kinds[0.5]) == {"exact", "reversed"}  # 12 tests, seed 3: a fixed, mixed draw
    again = tmp_path / "again.csv"
    invoke("synthetic-prior", "--data", data, "--out", again, "--reversed-fraction", 0.5, "--seed", 3)
    assert again.read_bytes() == (tmp_path / "synthetic-0.5.csv").read_bytes()


def test_ideal_observer_subcommand_json(files):
    data, *_ = files
    res = invoke("ideal-observer", "--data", data, "--taus", "50,5000", "--draws", 100)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    low, high = doc["results"]
    assert (low["tau"], high["tau"]) == (50, 5000) and low["tests"] + low["tests_all_tied"] == 12
    # CTRs 0.5 %-6 % on 5,000 impressions per headline: the ranking shows almost always.
    assert 0.5 <= low["accuracy"] < high["accuracy"] and high["accuracy"] > 0.95


def test_model_replay_never_tunes_on_the_models_training_headlines(exported_tiny, tiny_csv, tmp_path):
    """With --tune-data being the model's own training file, its train-split tests are dropped from tuning."""
    from lola.data.upworthy import headline_tests, load_packages, split_packages

    # Report tests: copies of six tiny tests under new ids and headlines (no overlap with anything fitted).
    rows = list(csv.DictReader(tiny_csv.open()))
    report = tmp_path / "report.csv"
    with report.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            if int(r["clickability_test_id"][1:]) < 6:
                w.writerow({**r, "clickability_test_id": "r" + r["clickability_test_id"], "headline": r["headline"] + " new"})
    packages = load_packages(tiny_csv)[0]
    train_heads = {p.headline.strip() for p in split_packages(packages)["train"]}
    all_tests = headline_tests(packages)
    n_seen = sum(any(h.strip() in train_heads for h in t.headlines) for t in all_tests)
    assert 0 < n_seen < len(all_tests)

    res = invoke("--data", report, "--tune-data", tiny_csv, "--model", exported_tiny, "--policies", "UCB,LOLA",
                 "--taus", "5", "--reps", "1", "--tune-reps", "1", "--json", "--no-progress")
    assert res.exit_code == 0, res.output
    settings = json.loads(res.output.strip().splitlines()[-1])["settings"]
    assert settings["tune_tests_dropped_seen_in_training"] == n_seen
    assert settings["tune_tests"] == len(all_tests) - n_seen
    assert settings["report_tests_seen_in_training"] == 0
    assert "sha256 checked" in settings["model_training_headlines"]

    # Without --tune-data the training file's own split is used: its tune and test parts share
    # no headline with train, so nothing is dropped or flagged.
    res = invoke("--data", tiny_csv, "--model", exported_tiny, "--policies", "UCB", "--taus", "5", "--reps", "1",
                 "--tune-reps", "1", "--json", "--no-progress")
    assert res.exit_code == 0, res.output
    settings = json.loads(res.output.strip().splitlines()[-1])["settings"]
    assert settings["tune_tests_dropped_seen_in_training"] == 0
    assert settings["report_tests_seen_in_training"] == 0


def test_replay_edge_pairs_refreshes_against_per_decision(files, tmp_path):
    data, _, priors, _ = files
    out = tmp_path / "edge.json"
    r = invoke("edge", "--data", data, "--priors", priors, "--refresh", "1,20", "--taus", "30", "--reps", "2",
               "--methods", "hallucinate", "--json", "--out", out)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc == json.loads(out.read_text())
    rows = {row["refresh"]: row for row in doc["results"]}
    assert rows[1]["loss_pct"] == 0.0 and rows[1]["ci95_pct"] == [0.0, 0.0]  # refresh 1 is per-decision serving
    assert rows[1]["clicks_per_decision"] == rows[20]["clicks_per_decision"] > 0
    lo, hi = rows[20]["ci95_pct"]
    assert lo <= rows[20]["loss_pct"] <= hi


@pytest.mark.parametrize("args,message", [(("--refresh", "0"), "--refresh"), (("--refresh", "x"), "--refresh"),
                                          (("--methods", "greedy"), "--methods")])
def test_replay_edge_bad_arguments_are_one_line(files, args, message):
    data, _, priors, _ = files
    r = invoke("edge", "--data", data, "--priors", priors, *args)
    assert r.exit_code != 0 and message in str(r.exception or r.output)
