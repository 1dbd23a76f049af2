"""LinUCB warm starts from past tests (LOLA Algorithm 4, line 1), for the worker.

``lola experiments warm-start past.csv --feature-dim d --out DIR/NAME.npz`` reads past
tests (CSV columns ``experiment_id, text, impressions, clicks``; one row per variant),
turns each text into the worker's own features (:func:`lola.stream.features.text_features`)
and writes rows ``X`` float64[M, d] and ``r`` float64[M] with

    X'X = w * sum_i n_i x_i x_i',    X'r = w * sum_i c_i x_i      (w = WARM_START_WEIGHT)

i.e. every past impression is one observation, weighted by ``w`` so years of history do
not freeze the online model (the replay uses the same weight). A worker started with
``LOLA_WARM_START_DIR=DIR`` loads every ``*.npz`` there at start; an experiment whose
variant settings say ``"warm_start": "NAME"`` gets ``BanditState.warm_start_linear(X, r)``
(A = ridge I + X'X, b = X'r) when it is created. The result lives in the state, so
checkpoints carry it; a replay from an older restore point re-applies the loaded file.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np

from lola.errors import ConfigError, EventError
from lola.kernels.policy_table import TABLE as POLICY_TABLE
from lola.stream.features import MAX_FEATURE_DIM, text_features

#: Weight of one past impression against one live impression (also the replay's).
WARM_START_WEIGHT = 1e-3
#: Limits: rows of one warm start (past variants), warm starts loaded by a worker.
MAX_ROWS = 200_000
MAX_FILES = 1000
WARM_START_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # also checked by lola.stream.events
COLUMNS = ("experiment_id", "text", "impressions", "clicks")


def warm_start_rows(features: np.ndarray, impressions: np.ndarray, clicks: np.ndarray,
                    weight: float = WARM_START_WEIGHT) -> tuple[np.ndarray, np.ndarray]:
    """Rows (X, r) with X'X = w sum n x x' and X'r = w sum c x (variants with n = 0 dropped)."""
    keep = impressions > 0
    s = np.sqrt(weight * impressions[keep])
    return np.ascontiguousarray(features[keep] * s[:, None]), weight * clicks[keep] / s


def read_past_tests(path: Path, feature_dim: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(X, r, number of past tests) of a CSV of past tests; a bad row is a ConfigError."""
    if not 1 <= feature_dim <= MAX_FEATURE_DIM:
        raise ConfigError(f"--feature-dim must be in [1, {MAX_FEATURE_DIM}]")
    feats, n, c, tests = [], [], [], set()
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [col for col in COLUMNS if col not in (reader.fieldnames or ())]
            if missing:
                raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}; need {', '.join(COLUMNS)}")
            for line, row in enumerate(reader, start=2):
                try:
                    imp, clk = float(row["impressions"]), float(row["clicks"])
                except (TypeError, ValueError):
                    raise ConfigError(f"{path}:{line}: impressions and clicks must be numbers") from None
                if not (math.isfinite(imp) and 0 <= clk <= imp):
                    raise ConfigError(f"{path}:{line}: need 0 <= clicks <= impressions (finite)")
                if len(n) >= MAX_ROWS:
                    raise ConfigError(f"{path}: more than {MAX_ROWS} rows")
                feats.append(text_features(row["text"] or "", feature_dim))
                n.append(imp)
                c.append(clk)
                tests.add(row["experiment_id"])
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a UTF-8 CSV ({exc})") from None
    if not n:
        raise ConfigError(f"{path}: no rows")
    X, r = warm_start_rows(np.array(feats), np.array(n), np.array(c))
    return X, r, len(tests)


def check_out(path: Path) -> None:
    """``--out`` must be NAME.npz, NAME a valid ``warm_start`` setting."""
    if not WARM_START_NAME.match(path.stem) or path.suffix != ".npz":
        raise ConfigError(f"--out must be NAME.npz with NAME matching {WARM_START_NAME.pattern} "
                          "(the worker's warm_start setting)")


def save(path: Path, X: np.ndarray, r: np.ndarray) -> None:
    check_out(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            np.savez(fh, X=X, r=r)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def load_dir(directory: Path | None, feature_dim: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every NAME.npz of a warm-start folder, checked against the worker's feature_dim."""
    if directory is None:
        return {}
    if not Path(directory).is_dir():
        raise ConfigError(f"warm_start_dir {directory} is not a folder")
    files = sorted(Path(directory).glob("*.npz"))
    if len(files) > MAX_FILES:
        raise ConfigError(f"{directory}: more than {MAX_FILES} warm starts")
    out = {}
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as npz:
                X, r = np.asarray(npz["X"], np.float64), np.asarray(npz["r"], np.float64)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same clear error
            raise ConfigError(f"{f}: not a warm start ({exc})") from None
        if X.ndim != 2 or X.shape[1] != feature_dim or r.shape != (X.shape[0],) or X.shape[0] > MAX_ROWS \
                or not (np.all(np.isfinite(X)) and np.all(np.isfinite(r))):
            raise ConfigError(f"{f}: need finite X[M, {feature_dim}] (the worker's feature_dim) and r[M], "
                              f"M <= {MAX_ROWS}")
        if WARM_START_NAME.match(f.stem):
            out[f.stem] = (X, r)
    return out


def linear_setup(policy: str, warm: str | None, warm_starts: dict, feature_dim: int):
    """The processor's check of a new experiment's LinUCB needs: its warm start (X, r) or
    None; EventError(invalid_settings) for a LinUCB policy without features (d = 0) or a
    warm start that is unknown, for another d, or for a policy that is not LinUCB."""
    linear = policy in POLICY_TABLE and POLICY_TABLE[policy].needs_features
    if linear and not feature_dim:
        raise EventError("invalid_settings", f"policy {policy!r} needs arm features: run the worker with "
                                             "LOLA_FEATURE_DIM >= 1")
    if warm is None:
        return None
    if warm not in warm_starts:
        raise EventError("invalid_settings", f"no warm start named {warm[:64]!r} in the worker's warm_start_dir")
    if not linear or warm_starts[warm][0].shape[1] != feature_dim:
        raise EventError("invalid_settings", f"warm_start needs a linucb/llm_linucb policy and features of "
                                             f"d = {feature_dim}")
    return warm_starts[warm]
