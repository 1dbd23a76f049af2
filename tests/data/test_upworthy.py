"""The Upworthy reader and the by-test splits."""

from __future__ import annotations

import textwrap

import pytest

from lola.data.upworthy import headline_tests, load_packages, split_of_tests, split_packages
from lola.errors import DataError


def test_dev_file_reads_fully_with_documented_counts(upworthy_csv):
    packages, report = load_packages(upworthy_csv)
    assert report.skipped == ()
    assert len(packages) == 16975
    assert len({p.test_id for p in packages}) == 3655
    # The data README documents 1,950 headline tests in this split.
    assert len(headline_tests(packages)) == 1950


def test_splits_are_disjoint_in_tests_and_headlines(upworthy_csv):
    packages, _ = load_packages(upworthy_csv)
    parts = split_packages(packages)
    tests = {s: {p.test_id for p in ps} for s, ps in parts.items()}
    heads = {s: {p.headline for p in ps} for s, ps in parts.items()}
    for a in tests:
        for b in tests:
            if a < b:
                assert not tests[a] & tests[b]
                assert not heads[a] & heads[b], f"headline shared between {a} and {b}"
    n = sum(len(t) for t in tests.values())
    assert 0.55 < len(tests["train"]) / n < 0.65
    assert 0.15 < len(tests["test"]) / n < 0.25


def test_split_ignores_row_order(upworthy_csv):
    packages, _ = load_packages(upworthy_csv)
    assert split_of_tests(packages) == split_of_tests(list(reversed(packages)))


def _write(tmp_path, body: str):
    path = tmp_path / "p.csv"
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def test_headline_test_sums_duplicate_headlines(tmp_path):
    path = _write(
        tmp_path,
        """
        clickability_test_id,eyecatcher_id,headline,impressions,clicks
        t1,e1,A,100,5
        t1,e1,A,50,1
        t1,e1,B,100,9
        t1,e2,C,100,1
        """,
    )
    packages, _ = load_packages(path)
    (test,) = headline_tests(packages)
    assert test.headlines == ("A", "B")
    assert test.impressions.tolist() == [150, 100]
    assert test.clicks.tolist() == [6, 9]


class TestBadInput:
    def test_missing_file(self, tmp_path):
        with pytest.raises(DataError, match="not found"):
            load_packages(tmp_path / "nope.csv")

    def test_missing_columns_named(self, tmp_path):
        path = _write(tmp_path, "clickability_test_id,headline\nt,h\n")
        with pytest.raises(DataError, match="eyecatcher_id, impressions, clicks"):
            load_packages(path)

    def test_bad_rows_skipped_with_reasons(self, tmp_path):
        path = _write(
            tmp_path,
            """
            clickability_test_id,eyecatcher_id,headline,impressions,clicks
            t1,e1,A,100,5
            t1,e1,,100,5
            t1,e1,B,abc,5
            t1,e1,C,10,50
            t1,e1,D,0,0
            """,
        )
        packages, report = load_packages(path)
        assert [p.headline for p in packages] == ["A"]
        reasons = dict(report.skipped)
        assert set(reasons) == {3, 4, 5, 6}
        assert "headline is empty" in reasons[3]
        assert "not a number" in reasons[4]
        assert "outside" in reasons[5]
        assert "must be positive" in reasons[6]

    def test_no_usable_rows(self, tmp_path):
        path = _write(tmp_path, "clickability_test_id,eyecatcher_id,headline,impressions,clicks\nt,e,,1,0\n")
        with pytest.raises(DataError, match="no usable rows"):
            load_packages(path)

    def test_bad_fractions(self, upworthy_csv):
        packages, _ = load_packages(upworthy_csv)
        with pytest.raises(DataError, match="summing to 1"):
            split_of_tests(packages[:10], fractions=(0.5, 0.5, 0.5))
