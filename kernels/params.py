"""Per-experiment policy parameters: frozen, validated, one message per rule.

:class:`ExperimentParams` is what the stream worker reads from an experiment's
configuration and what the replay sweeps over. Every rule raises
:class:`lola.errors.ConfigError` with one sentence naming the field, the rule
and the offending value, so a bad configuration is rejected before it reaches a
kernel.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from numbers import Integral, Real
from typing import Any

from lola.errors import ConfigError

POLICIES: tuple[str, ...] = (
    "llm2ucb",
    "ucb",
    "pure_llm",
    "ec",
    "ts",
    "llm_ts",
    "linucb",
    "llm_linucb",
    "bai",
    "llm_bai",
    "llm2ucb_eb",
)
"""Policy names, in the order of their integer codes inside the kernels."""

POLICY_CODE: dict[str, int] = {name: code for code, name in enumerate(POLICIES)}
#: Policies that randomise every decision (Thompson sampling): each arm keeps a positive
#: propensity. The others argmax a deterministic index, so an arm off the argmax has
#: propensity 0 and inverse-propensity (off-policy) evaluation needs ``min_traffic > 0``.
STOCHASTIC_POLICIES: frozenset[str] = frozenset({"ts", "llm_ts"})
BAI_RADII: tuple[str, ...] = ("hoeffding", "bernstein")


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


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ConfigError(f"{name} must not be NaN")
    return value


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ExperimentParams:
    """Policy and hyperparameters of one experiment (LOLA section 4.3, appendix G).

    Parameters
    ----------
    policy : str
        One of :data:`POLICIES`.
    alpha : float
        UCB confidence scale of Algorithm 1 (paper grid {0.02..0.10}, chosen 0.08).
    n_aux : float
        LLM prior worth in pseudo-impressions (Algorithm 1: chosen 1000; LLM-TS:
        1200; LLM-BAI: 300). ``math.inf`` is the pure-LLM greedy limit. Forced to
        0 for ``ucb``/``ts``/``bai`` and to ``inf`` for ``pure_llm``. For
        ``llm2ucb_eb`` it is the centre ``n_aux0`` of the empirical-Bayes estimate.
    gamma : float
        Discount in (0, 1] applied to an experiment's statistics once per
        impression (1 = no forgetting; paper 000's drifting preferences).
    conversion_weight : float
        lambda >= 0: reward = click + lambda * conversion value (papers 001/003).
    horizon : int or None
        Planned impressions of the experiment; required by ``ec``.
    explore_fraction : float
        E&C: share of ``horizon`` spent exploring round-robin (paper: 0.2).
    min_traffic : float
        Floor share of traffic per active arm, in [0, 1); capped at 1/K_active.
    burn_in : int
        Uniform allocation over active arms for the first ``burn_in`` impressions.
    ts_alpha0, ts_beta0 : float
        Beta prior of TS / LLM-TS (Algorithm 3); paper used 1.38 / 96.11.
    eb_strength : float
        ``llm2ucb_eb`` hyperprior strength passed to ``adaptive_n_aux``.
    linucb_alpha, ridge : float
        LinUCB confidence scale and ridge lambda (A starts at ridge * I).
    bai_epsilon, bai_gamma, bai_delta : float
        (epsilon, gamma, delta) of appendix G.1: 0, 0.005, 0.2.
    bai_radius : str
        Confidence radius of Algorithm 2: ``"hoeffding"`` (the paper's) or
        ``"bernstein"`` (empirical Bernstein: far tighter at low CTRs; clicks only,
        so it needs ``conversion_weight`` 0).
    propensity_draws : int
        Unused since #20 (TS propensities are computed by quadrature,
        :mod:`lola.kernels.allocation`); still accepted, and stored, for compatibility.
    """

    policy: str = "llm2ucb"
    alpha: float = 0.08
    n_aux: float = 1000.0
    gamma: float = 1.0
    conversion_weight: float = 0.0
    horizon: int | None = None
    explore_fraction: float = 0.2
    min_traffic: float = 0.0
    burn_in: int = 0
    ts_alpha0: float = 1.0
    ts_beta0: float = 1.0
    eb_strength: float = 4.0
    linucb_alpha: float = 1.0
    ridge: float = 1.0
    bai_epsilon: float = 0.0
    bai_gamma: float = 0.005
    bai_delta: float = 0.2
    bai_radius: str = "hoeffding"
    propensity_draws: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.policy, str) or self.policy not in POLICY_CODE:
            raise ConfigError(f"policy must be one of {', '.join(POLICIES)}; got {self.policy!r}")
        alpha = _number("alpha", self.alpha)
        if not (0.0 <= alpha <= MAX_ALPHA):
            raise ConfigError(f"alpha must be in [0, {MAX_ALPHA:g}], got {self.alpha!r}")
        n_aux = _number("n_aux", self.n_aux)
        if not (0.0 <= n_aux <= MAX_N_AUX or n_aux == math.inf):
            raise ConfigError(f"n_aux must be in [0, {MAX_N_AUX:g}] (or math.inf), got {self.n_aux!r}")
        gamma = _number("gamma", self.gamma)
        if not (MIN_GAMMA <= gamma <= 1.0):
            raise ConfigError(f"gamma must be in [{MIN_GAMMA:g}, 1], got {self.gamma!r}")
        lam = _number("conversion_weight", self.conversion_weight)
        if not (0.0 <= lam <= MAX_CONVERSION_WEIGHT):
            raise ConfigError(f"conversion_weight must be in [0, {MAX_CONVERSION_WEIGHT:g}], "
                              f"got {self.conversion_weight!r}")
        if self.horizon is not None and not (1 <= _integer("horizon", self.horizon) <= MAX_HORIZON):
            raise ConfigError(f"horizon must be an integer in [1, {MAX_HORIZON:g}] or None, got {self.horizon!r}")
        if self.policy == "ec" and self.horizon is None:
            raise ConfigError("policy 'ec' needs a horizon (impressions) to size its exploration phase")
        frac = _number("explore_fraction", self.explore_fraction)
        if not (0.0 < frac <= 1.0):
            raise ConfigError(f"explore_fraction must be in (0, 1], got {self.explore_fraction!r}")
        floor = _number("min_traffic", self.min_traffic)
        if not (0.0 <= floor < 1.0):
            raise ConfigError(f"min_traffic must be in [0, 1), got {self.min_traffic!r}")
        if not (0 <= _integer("burn_in", self.burn_in) <= MAX_BURN_IN):
            raise ConfigError(f"burn_in must be an integer in [0, {MAX_BURN_IN:g}], got {self.burn_in!r}")
        for name in ("ts_alpha0", "ts_beta0"):
            v = _number(name, getattr(self, name))
            if not (0.0 < v <= MAX_TS_PRIOR):
                raise ConfigError(f"{name} must be in (0, {MAX_TS_PRIOR:g}], got {getattr(self, name)!r}")
        eb = _number("eb_strength", self.eb_strength)
        if not (0.0 <= eb <= MAX_EB_STRENGTH):
            raise ConfigError(f"eb_strength must be in [0, {MAX_EB_STRENGTH:g}], got {self.eb_strength!r}")
        la = _number("linucb_alpha", self.linucb_alpha)
        if not (0.0 <= la <= MAX_LINUCB_ALPHA):
            raise ConfigError(f"linucb_alpha must be in [0, {MAX_LINUCB_ALPHA:g}], got {self.linucb_alpha!r}")
        ridge = _number("ridge", self.ridge)
        if not (MIN_RIDGE <= ridge <= MAX_RIDGE):
            raise ConfigError(f"ridge must be in [{MIN_RIDGE:g}, {MAX_RIDGE:g}], got {self.ridge!r}")
        for name in ("bai_epsilon", "bai_gamma"):
            v = _number(name, getattr(self, name))
            if not (0.0 <= v <= MAX_BAI_GAP):
                raise ConfigError(f"{name} must be in [0, {MAX_BAI_GAP:g}], got {getattr(self, name)!r}")
        delta = _number("bai_delta", self.bai_delta)
        if not (MIN_BAI_DELTA <= delta < 1.0):
            raise ConfigError(f"bai_delta must be in [{MIN_BAI_DELTA:g}, 1), got {self.bai_delta!r}")
        if self.bai_radius not in BAI_RADII:
            raise ConfigError(f"bai_radius must be one of {', '.join(BAI_RADII)}; got {self.bai_radius!r}")
        if self.bai_radius == "bernstein" and lam != 0.0:
            # The kernel keeps no sum of squares, so the sample variance is only known for 0/1 rewards.
            raise ConfigError(f"bai_radius 'bernstein' needs conversion_weight 0 (0/1 rewards), got {self.conversion_weight!r}")
        if not (1 <= _integer("propensity_draws", self.propensity_draws) <= MAX_PROPENSITY_DRAWS):
            raise ConfigError(f"propensity_draws must be an integer in [1, {MAX_PROPENSITY_DRAWS}], "
                              f"got {self.propensity_draws!r}")

    @property
    def code(self) -> int:
        """Integer policy code used inside the kernels."""
        return POLICY_CODE[self.policy]

    @property
    def needs_floor_for_ope(self) -> bool:
        """True for a deterministic index policy: off-policy evaluation needs ``min_traffic > 0``."""
        return self.policy not in STOCHASTIC_POLICIES

    @property
    def supports_ope(self) -> bool:
        """Every arm has a positive propensity after burn-in (TS, or a floor ``min_traffic > 0``)."""
        return not self.needs_floor_for_ope or self.min_traffic > 0.0

    @property
    def effective_n_aux(self) -> float:
        """The prior strength the kernels use (0 for prior-free policies, inf for pure_llm)."""
        if self.policy in ("ucb", "ts", "bai", "ec", "linucb"):
            return 0.0
        if self.policy == "pure_llm":
            return math.inf
        return float(self.n_aux)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (``n_aux`` may be ``inf``: serialise with care in JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentParams":
        """Build from a mapping; unknown keys are a :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown experiment parameter(s): {', '.join(unknown)}")
        return cls(**data)
