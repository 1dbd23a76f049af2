"""Which headline tests the demo runs: a seeded draw from one split of the archive."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from lola.data.upworthy import HeadlineTest, headline_tests, load_packages, split_packages
from lola.errors import ConfigError


def select_tests(data: Path, n: int, seed: int, split: str) -> list[HeadlineTest]:
    """``n`` headline tests from one split, drawn in a seeded order, returned in file order.

    The same draw as ``lola loadgen closed --tests n --seed seed`` on the same tests.
    """
    packages, _ = load_packages(data)
    tests = headline_tests(split_packages(packages)[split])
    if not tests:
        raise ConfigError(f"no headline tests in the {split} split of {data}")
    order = np.random.default_rng(seed).permutation(len(tests))[:n]
    return [tests[int(i)] for i in sorted(order)]


def write_tests_csv(data: Path, tests: Sequence[HeadlineTest], out: Path) -> Path:
    """The archive rows of the chosen tests, with the archive's own columns."""
    keys = {(t.test_id, t.eyecatcher_id) for t in tests}
    with open(data, newline="", encoding="utf-8") as src, open(out, "w", newline="", encoding="utf-8") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames or [])
        writer.writeheader()
        for row in reader:
            if (row.get("clickability_test_id"), row.get("eyecatcher_id")) in keys:
                writer.writerow(row)
    return out


def concat_csv(paths: Sequence[Path], out: Path) -> Path:
    """Rows of several CSVs with the same header, in order (missing files are skipped)."""
    with open(out, "w", newline="", encoding="utf-8") as dst:
        writer = None
        for path in paths:
            if not path.is_file():
                continue
            with open(path, newline="", encoding="utf-8") as src:
                reader = csv.DictReader(src)
                if writer is None:
                    writer = csv.DictWriter(dst, fieldnames=reader.fieldnames or [])
                    writer.writeheader()
                writer.writerows(reader)
    return out
