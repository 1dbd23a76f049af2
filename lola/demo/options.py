"""The options of one ``lola demo`` run, validated once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lola.errors import ConfigError

DEFAULT_MODEL_DIR = Path("models") / "ctr-onnx"
RUN_MARKER_ENV = "LOLA_DEMO_RUN"
"""Every process the demo starts carries ``LOLA_DEMO_RUN=<run id>``: how cleanup (and the tests) find them."""
REPLAY_POLICIES = ("E&C", "UCB", "LOLA")


@dataclass(frozen=True)
class DemoOptions:
    """Validated settings of one demo run."""

    model: Path | None
    data: Path
    tests: int = 100
    tau: int = 500
    duration_s: float = 480.0
    reps: int = 10
    seed: int = 7
    out_dir: Path = Path("reports")
    bootstrap: str | None = None
    split: str = "test"
    live: bool = True

    def __post_init__(self) -> None:
        if self.tests < 1:
            raise ConfigError(f"--tests must be >= 1, got {self.tests}")
        if not 1 <= self.tau <= 100_000:
            raise ConfigError(f"--tau must be in 1..100000, got {self.tau}")
        if not 5 <= self.duration_s <= 86_400:
            raise ConfigError(f"--duration must be in 5..86400 seconds, got {self.duration_s:g}")
        if not 1 <= self.reps <= 1000:
            raise ConfigError(f"--reps must be in 1..1000, got {self.reps}")
        if self.split not in ("train", "tune", "test"):
            raise ConfigError(f"--split must be train, tune or test, got {self.split!r}")
        if not self.data.is_file():
            raise ConfigError(f"--data {self.data} is not a file")
        if self.bootstrap is not None and not re.fullmatch(r"[^,:\s]+:\d+(,[^,:\s]+:\d+)*", self.bootstrap):
            raise ConfigError(f"--bootstrap must be HOST:PORT[,HOST:PORT], got {self.bootstrap!r}")


SHORT = {"tests": 6, "tau": 20, "duration_s": 40.0, "reps": 2}
"""``--short``: a quick run (about a minute) for tests and smoke checks."""
