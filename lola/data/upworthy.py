"""Read Upworthy Research Archive package CSVs and split them by test.

The reader uses the archive's own column names, so the development split in
``shared/data/upworthy`` and the official archive files read alike.

Splits
------
Train, tune and test are assigned per *component* of tests: tests that share a
headline text are put in one component (union-find), and a whole component goes
to one split. So no headline appears in two splits, and the assignment depends
only on test ids and headlines (a salted sha256), never on file order.
"""

from __future__ import annotations

import csv
import hashlib
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np

from lola.errors import DataError

REQUIRED_COLUMNS = ("clickability_test_id", "eyecatcher_id", "headline", "impressions", "clicks")
OPTIONAL_COLUMNS = ("lede", "excerpt", "test_week", "significance", "first_place", "winner")
SPLITS = ("train", "tune", "test")
SplitName = Literal["train", "tune", "test"]
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
DEFAULT_SALT = "lola-split-v1"


@dataclass(frozen=True)
class Package:
    """One tested package (a headline, possibly with an image) and its traffic."""

    test_id: str
    eyecatcher_id: str
    headline: str
    impressions: int
    clicks: int
    lede: str = ""
    excerpt: str = ""
    test_week: int | None = None

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions


@dataclass(frozen=True)
class HeadlineTest:
    """One LOLA headline test: a (clickability_test_id, eyecatcher_id) group.

    ``headlines`` are distinct; a headline shown twice in the group has its
    impressions and clicks summed.
    """

    test_id: str
    eyecatcher_id: str
    headlines: tuple[str, ...]
    impressions: np.ndarray
    clicks: np.ndarray
    packages: tuple[Package, ...] = field(repr=False, default=())

    @property
    def ctrs(self) -> np.ndarray:
        return self.clicks / self.impressions

    @property
    def n_arms(self) -> int:
        return len(self.headlines)

    @property
    def best(self) -> int:
        """Index of the headline with the highest archive CTR (the first, on a tie)."""
        return int(np.argmax(self.ctrs))

    @property
    def uniform_ctr(self) -> float:
        """Expected CTR of an even split over the headlines (an A/B test's allocation)."""
        return float(self.ctrs.mean())

    @property
    def oracle_ctr(self) -> float:
        """Expected CTR of always showing the best headline."""
        return float(self.ctrs.max())


@dataclass(frozen=True)
class LoadReport:
    """What the reader skipped and why (row numbers are 1-based, header is row 1)."""

    rows_read: int
    skipped: tuple[tuple[int, str], ...]

    def summary(self) -> str:
        if not self.skipped:
            return f"read {self.rows_read} rows, skipped none"
        first = "; ".join(f"row {n}: {why}" for n, why in self.skipped[:3])
        return f"read {self.rows_read} rows, skipped {len(self.skipped)} ({first}{'; …' if len(self.skipped) > 3 else ''})"


def _parse_int(text: str, name: str) -> int:
    text = (text or "").strip()
    if not text:
        raise ValueError(f"{name} is empty")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number") from None
    if not np.isfinite(value) or value != int(value):
        raise ValueError(f"{name}={text!r} is not a whole number")
    return int(value)


def load_packages(path: str | Path) -> tuple[list[Package], LoadReport]:
    """Read an Upworthy package CSV.

    Rows with bad values (empty headline, non-numeric or negative counts,
    clicks above impressions, zero impressions) are skipped and listed in the
    report. A missing file, missing columns, or a file with no usable row raise
    :class:`~lola.errors.DataError` before any work starts.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Upworthy CSV not found: {path}")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    packages: list[Package] = []
    skipped: list[tuple[int, str]] = []
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or ())
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {sorted(columns)}")
        rows = 0
        for row_number, row in enumerate(reader, start=2):
            rows += 1
            try:
                headline = (row.get("headline") or "").strip()
                if not headline:
                    raise ValueError("headline is empty")
                test_id = (row.get("clickability_test_id") or "").strip()
                if not test_id:
                    raise ValueError("clickability_test_id is empty")
                impressions = _parse_int(row["impressions"], "impressions")
                clicks = _parse_int(row["clicks"], "clicks")
                if impressions <= 0:
                    raise ValueError(f"impressions={impressions} must be positive")
                if clicks < 0 or clicks > impressions:
                    raise ValueError(f"clicks={clicks} outside [0, impressions={impressions}]")
                week_text = (row.get("test_week") or "").strip()
                week = int(float(week_text)) if week_text.replace(".", "", 1).isdigit() else None
            except (ValueError, TypeError) as exc:
                skipped.append((row_number, str(exc)))
                continue
            packages.append(
                Package(
                    test_id=test_id,
                    eyecatcher_id=(row.get("eyecatcher_id") or "").strip(),
                    headline=headline,
                    impressions=impressions,
                    clicks=clicks,
                    lede=row.get("lede") or "",
                    excerpt=row.get("excerpt") or "",
                    test_week=week,
                )
            )
    report = LoadReport(rows_read=rows, skipped=tuple(skipped))
    if not packages:
        raise DataError(f"{path}: no usable rows ({report.summary()})")
    return packages, report


def headline_tests(packages: Iterable[Package], min_headlines: int = 2) -> list[HeadlineTest]:
    """Group packages into LOLA headline tests with at least ``min_headlines`` distinct headlines.

    Tests come back sorted by (test_id, eyecatcher_id) so results never depend on
    file order.
    """
    groups: dict[tuple[str, str], dict[str, list[Package]]] = defaultdict(lambda: defaultdict(list))
    for p in packages:
        groups[(p.test_id, p.eyecatcher_id)][p.headline].append(p)
    tests = []
    for (test_id, eye), by_headline in sorted(groups.items()):
        if len(by_headline) < min_headlines:
            continue
        headlines = tuple(sorted(by_headline))
        imps = np.array([sum(p.impressions for p in by_headline[h]) for h in headlines], dtype=np.int64)
        clicks = np.array([sum(p.clicks for p in by_headline[h]) for h in headlines], dtype=np.int64)
        members = tuple(p for h in headlines for p in by_headline[h])
        tests.append(HeadlineTest(test_id, eye, headlines, imps, clicks, members))
    return tests


def _components(packages: Sequence[Package]) -> dict[str, str]:
    """Map each test id to its component key (the smallest test id sharing a headline chain)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))
            parent[hi] = lo

    first_test_of_headline: dict[str, str] = {}
    for p in packages:
        find(p.test_id)
        key = p.headline.strip()
        if key in first_test_of_headline:
            union(first_test_of_headline[key], p.test_id)
        else:
            first_test_of_headline[key] = p.test_id
    return {t: find(t) for t in parent}


def split_of_tests(
    packages: Sequence[Package],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    salt: str = DEFAULT_SALT,
) -> dict[str, SplitName]:
    """Assign every clickability_test_id to train, tune or test (see module docstring)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise DataError(f"split fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    edges = np.cumsum(fractions)
    out: dict[str, SplitName] = {}
    for test_id, component in _components(packages).items():
        digest = hashlib.sha256(f"{salt}:{component}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        out[test_id] = SPLITS[int(np.searchsorted(edges, u, side="right"))] if u < edges[-1] else SPLITS[-1]
    return out


def split_packages(
    packages: Sequence[Package],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    salt: str = DEFAULT_SALT,
) -> dict[SplitName, list[Package]]:
    """Packages per split, by :func:`split_of_tests`."""
    assignment = split_of_tests(packages, fractions, salt)
    out: dict[SplitName, list[Package]] = {s: [] for s in SPLITS}
    for p in packages:
        out[assignment[p.test_id]].append(p)
    return out
