"""The one policy table: every policy's kernel code, needs and accepted settings with bounds.

Read by :mod:`lola.kernels.params` (validation: a setting the policy does not use is
a :class:`~lola.errors.ConfigError`), :mod:`lola.kernels.core` (the integer codes),
:mod:`lola.kernels.state`, the stream's variant-settings validation, the replay and
``docs/policies.md`` (generated from :func:`markdown_table`; a test keeps it current).
Pure Python, no Numba: importing it costs nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

#: Explicit bounds of the numeric parameters (docs/operations/limits.md). Far beyond any
#: sensible experiment, and small enough that no kernel sum, product or log can overflow
#: to inf (or inf - inf to NaN) from finite statistics: every value a kernel multiplies
#: stays below 1e12, so products stay below ~1e40 even after 2**53 events.
MAX_ALPHA = 1e6
MAX_N_AUX = 1e12          # finite values; math.inf (the pure-LLM limit) is allowed too
MIN_GAMMA = 1e-6
MAX_CONVERSION_WEIGHT = 1e6
MAX_HORIZON = 10**15
MAX_BURN_IN = 10**15
MAX_TS_PRIOR = 1e12       # ts_alpha0, ts_beta0
MAX_EB_STRENGTH = 1e6
MAX_LINUCB_ALPHA = 1e6
MAX_RIDGE = 1e12
MIN_RIDGE = 1e-12
MAX_BAI_GAP = 1e6         # bai_epsilon, bai_gamma
MIN_BAI_DELTA = 1e-12
MAX_PROPENSITY_DRAWS = 100_000
MAX_TS_REFRESH = 1.0      # ts_refresh: a relative change of the effective counts
BAI_RADII: tuple[str, ...] = ("hoeffding", "bernstein")


@dataclass(frozen=True)
class Setting:
    """One experiment setting: type, default and bounds (``lo``/``hi`` inclusive unless ``*_open``)."""

    name: str
    kind: str  # "number", "integer" or "string"
    default: Any
    doc: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] = ()
    allow_inf: bool = False  # math.inf is legal besides [lo, hi] (n_aux: the pure-LLM limit)
    nullable: bool = False   # None is legal (horizon: unknown)

    def bounds(self) -> str:
        """The rule in words, e.g. ``[0, 1e+06]`` or ``one of hoeffding, bernstein``."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        text = f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.allow_inf:
            text += " or inf"
        if self.nullable:
            text += " or null"
        return text

    def check(self, value: Any) -> str | None:
        """None when ``value`` is legal, else the one-line reason (without the name)."""
        if value is None and self.nullable:
            return None
        if self.kind == "string":
            if value not in self.choices:
                return f"must be {self.bounds()}; got {value!r}"
            return None
        if isinstance(value, bool) or not isinstance(value, Integral if self.kind == "integer" else Real):
            return f"must be {'an integer' if self.kind == 'integer' else 'a number'}, got {value!r}"
        v = float(value)
        if math.isnan(v):
            return "must not be NaN"
        if v == math.inf and self.allow_inf:
            return None
        ok_lo = v > self.lo if self.lo_open else v >= self.lo
        ok_hi = v < self.hi if self.hi_open else v <= self.hi
        if not (ok_lo and ok_hi):
            return f"must be {'an integer ' if self.kind == 'integer' else ''}in {self.bounds()}, got {value!r}"
        return None


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("alpha", "number", 0.08, "UCB confidence scale (Algorithm 1; paper chose 0.08)", 0.0, MAX_ALPHA),
    Setting("n_aux", "number", 1000.0, "LLM prior worth in pseudo-impressions (llm2ucb_eb: the centre n_aux0)",
            0.0, MAX_N_AUX, allow_inf=True),
    Setting("gamma", "number", 1.0, "discount per impression (1 = no forgetting)", MIN_GAMMA, 1.0),
    Setting("conversion_weight", "number", 0.0, "reward = click + conversion_weight * conversion value",
            0.0, MAX_CONVERSION_WEIGHT),
    Setting("horizon", "integer", None, "planned impressions of the experiment", 1, MAX_HORIZON, nullable=True),
    Setting("explore_fraction", "number", 0.2, "E&C: share of horizon explored round-robin", 0.0, 1.0,
            lo_open=True),
    Setting("min_traffic", "number", 0.0, "floor share of traffic per active arm (capped at 1/K)", 0.0, 1.0,
            hi_open=True),
    Setting("burn_in", "integer", 0, "uniform allocation for the first burn_in impressions", 0, MAX_BURN_IN),
    Setting("ts_alpha0", "number", 1.0, "Beta prior alpha of TS (Algorithm 3; paper fit 1.38)", 0.0, MAX_TS_PRIOR,
            lo_open=True),
    Setting("ts_beta0", "number", 1.0, "Beta prior beta of TS (paper fit 96.11)", 0.0, MAX_TS_PRIOR, lo_open=True),
    Setting("propensity_draws", "integer", 64, "extra posterior draws per TS decision (Monte Carlo propensity)",
            1, MAX_PROPENSITY_DRAWS),
    Setting("ts_refresh", "number", 0.05, "TS: the decision posterior (and its cached allocation) is refreshed when "
            "an active arm's Beta (a, b) moved by more than this fraction of a + b (0 = every state version)",
            0.0, MAX_TS_REFRESH),
    Setting("eb_strength", "number", 4.0, "empirical-Bayes hyperprior strength", 0.0, MAX_EB_STRENGTH),
    Setting("linucb_alpha", "number", 1.0, "LinUCB confidence scale", 0.0, MAX_LINUCB_ALPHA),
    Setting("ridge", "number", 1.0, "LinUCB ridge lambda (A starts at ridge * I)", MIN_RIDGE, MAX_RIDGE),
    Setting("bai_epsilon", "number", 0.0, "BAI epsilon (appendix G.1)", 0.0, MAX_BAI_GAP),
    Setting("bai_gamma", "number", 0.005, "BAI gamma (appendix G.1)", 0.0, MAX_BAI_GAP),
    Setting("bai_delta", "number", 0.2, "BAI confidence delta", MIN_BAI_DELTA, 1.0, hi_open=True),
    Setting("bai_radius", "string", "hoeffding", "BAI confidence radius (bernstein: clicks only)",
            choices=BAI_RADII),
)}

#: Settings every policy accepts: they act outside the policy's index.
COMMON: tuple[str, ...] = ("gamma", "conversion_weight", "horizon", "min_traffic", "burn_in")
_TS = ("ts_alpha0", "ts_beta0", "propensity_draws", "ts_refresh")
_LIN = ("linucb_alpha", "ridge")
_BAI = ("bai_epsilon", "bai_gamma", "bai_delta", "bai_radius")


@dataclass(frozen=True)
class Policy:
    """One row of the policy table."""

    name: str
    code: int            # integer code inside the kernels (core.P_*)
    family: str          # "ucb", "ec", "ts", "linucb" or "bai": the kernel branch it runs
    uses_prior: bool     # reads the LLM prior CTR of each arm
    needs_features: bool  # needs arm feature vectors (BanditState feature_dim > 0)
    needs_horizon: bool  # rejects horizon None
    settings: tuple[str, ...]  # policy-specific settings, besides COMMON
    doc: str

    @property
    def accepts(self) -> tuple[str, ...]:
        """Every setting this policy reads (its own, then :data:`COMMON`)."""
        return self.settings + COMMON


_ROWS = (
    Policy("llm2ucb", 0, "ucb", True, False, False, ("alpha", "n_aux"), "LOLA's LLM-2UCBs (Algorithm 1)"),
    Policy("ucb", 1, "ucb", False, False, False, ("alpha",), "UCB without prior"),
    Policy("pure_llm", 2, "ucb", True, False, False, ("alpha", "n_aux"), "greedy on the LLM prior (n_aux = inf)"),
    Policy("ec", 3, "ec", False, False, True, ("explore_fraction",), "explore-then-commit"),
    Policy("ts", 4, "ts", False, False, False, _TS, "Beta-Bernoulli Thompson sampling"),
    Policy("llm_ts", 5, "ts", True, False, False, ("n_aux",) + _TS, "LLM-TS (Algorithm 3)"),
    Policy("linucb", 6, "linucb", False, True, False, _LIN, "LinUCB on arm features"),
    Policy("llm_linucb", 7, "linucb", True, True, False, ("n_aux",) + _LIN, "LinUCB on LLM arm features"),
    Policy("bai", 8, "bai", False, False, False, _BAI, "best-arm identification (Algorithm 2)"),
    Policy("llm_bai", 9, "bai", True, False, False, ("n_aux",) + _BAI, "LLM-BAI (Algorithm 2 with prior)"),
    Policy("llm2ucb_eb", 10, "ucb", True, False, False, ("alpha", "n_aux", "eb_strength"),
           "LLM-2UCBs with empirical-Bayes n_aux"),
)
TABLE: dict[str, Policy] = {p.name: p for p in _ROWS}
POLICIES: tuple[str, ...] = tuple(p.name for p in sorted(_ROWS, key=lambda p: p.code))
"""Policy names, in the order of their integer codes inside the kernels."""
POLICY_CODE: dict[str, int] = {p.name: p.code for p in _ROWS}
#: Every setting a stream ``variant`` event may carry besides the stream's own (attribution_window_s).
ALL_SETTINGS: tuple[str, ...] = ("policy",) + tuple(SETTINGS)


def family(name: str) -> str:
    """The kernel family of a policy name (``"linucb"`` for ``llm_linucb``...)."""
    return TABLE[name].family


def markdown_table() -> str:
    """The tables of docs/policies.md (tests/kernels/test_policy_table.py keeps the file current)."""
    lines = ["| policy | code | family | uses prior | needs features | needs horizon | settings (besides common) |",
             "|---|---|---|---|---|---|---|"]
    for name in POLICIES:
        p = TABLE[name]
        yes = {True: "yes", False: "no"}
        lines.append(f"| `{p.name}` | {p.code} | {p.family} | {yes[p.uses_prior]} | {yes[p.needs_features]} | "
                     f"{yes[p.needs_horizon]} | {', '.join(f'`{s}`' for s in p.settings)} |")
    lines += ["", "Common settings (every policy): " + ", ".join(f"`{s}`" for s in COMMON) + ".", "",
              "| setting | type | default | bounds | meaning |", "|---|---|---|---|---|"]
    for s in SETTINGS.values():
        default = "null" if s.default is None else (f"`{s.default}`" if s.kind == "string" else f"{s.default:g}")
        lines.append(f"| `{s.name}` | {s.kind} | {default} | {s.bounds()} | {s.doc} |")
    return "\n".join(lines) + "\n"
