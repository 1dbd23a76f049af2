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
from typing import Any

from lola.errors import ConfigError

# The policy table holds the names, codes and every setting's bounds (one definition);
# re-exported here for the callers that import them from params.
from lola.kernels.policy_table import (  # noqa: E402,F401
    BAI_RADII, MAX_ALPHA, MAX_BAI_GAP, MAX_BURN_IN, MAX_CONVERSION_WEIGHT, MAX_EB_STRENGTH, MAX_HORIZON,
    MAX_LINUCB_ALPHA, MAX_N_AUX, MAX_PROPENSITY_DRAWS, MAX_RIDGE, MAX_TS_PRIOR, MIN_BAI_DELTA, MIN_GAMMA,
    MAX_TS_REFRESH, MIN_RIDGE, POLICIES, POLICY_CODE, SETTINGS, TABLE)

#: Policies that randomise every decision (Thompson sampling): each arm keeps a positive
#: propensity. The others argmax a deterministic index, so an arm off the argmax has
#: propensity 0 and inverse-propensity (off-policy) evaluation needs ``min_traffic > 0``.
STOCHASTIC_POLICIES: frozenset[str] = frozenset(p.name for p in TABLE.values() if p.family == "ts")


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
    ts_refresh : float
        TS / LLM-TS: a decision draws from the posterior as of the last refresh, which is
        redone when an active arm's Beta (a, b) moved (L1) by more than ``ts_refresh`` x
        (a + b) of the reference, or the arms, prior or settings changed; 0 = every state
        version (plain TS). The cached allocation of that posterior is the propensity
        (docs/policies.md, "TS refresh").
    propensity_draws : int
        Unused since #20 (TS propensities are computed by quadrature,
        :mod:`lola.kernels.allocation`); still accepted, and stored, for compatibility.
    """

    policy: str = "llm2ucb"
    alpha: float = SETTINGS["alpha"].default
    n_aux: float = SETTINGS["n_aux"].default
    gamma: float = SETTINGS["gamma"].default
    conversion_weight: float = SETTINGS["conversion_weight"].default
    horizon: int | None = SETTINGS["horizon"].default
    explore_fraction: float = SETTINGS["explore_fraction"].default
    min_traffic: float = SETTINGS["min_traffic"].default
    burn_in: int = SETTINGS["burn_in"].default
    ts_alpha0: float = SETTINGS["ts_alpha0"].default
    ts_beta0: float = SETTINGS["ts_beta0"].default
    eb_strength: float = SETTINGS["eb_strength"].default
    linucb_alpha: float = SETTINGS["linucb_alpha"].default
    ridge: float = SETTINGS["ridge"].default
    bai_epsilon: float = SETTINGS["bai_epsilon"].default
    bai_gamma: float = SETTINGS["bai_gamma"].default
    bai_delta: float = SETTINGS["bai_delta"].default
    bai_radius: str = SETTINGS["bai_radius"].default
    propensity_draws: int = SETTINGS["propensity_draws"].default
    ts_refresh: float = SETTINGS["ts_refresh"].default

    def __post_init__(self) -> None:
        if not isinstance(self.policy, str) or self.policy not in POLICY_CODE:
            raise ConfigError(f"policy must be one of {', '.join(POLICIES)}; got {self.policy!r}")
        for name, setting in SETTINGS.items():
            problem = setting.check(getattr(self, name))
            if problem:
                raise ConfigError(f"{name} {problem}")
        row = TABLE[self.policy]
        if row.needs_horizon and self.horizon is None:
            raise ConfigError(f"policy {self.policy!r} needs a horizon (impressions) to size its exploration phase")
        if self.bai_radius == "bernstein" and self.conversion_weight != 0.0:
            # The kernel keeps no sum of squares, so the sample variance is only known for 0/1 rewards.
            raise ConfigError(f"bai_radius 'bernstein' needs conversion_weight 0 (0/1 rewards), got {self.conversion_weight!r}")

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
        if not TABLE[self.policy].uses_prior:
            return 0.0
        if self.policy == "pure_llm":
            return math.inf
        return float(self.n_aux)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (``n_aux`` may be ``inf``: serialise with care in JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentParams":
        """Build from settings a user sent (the stream's variant event, the replay's grid).

        Unknown keys are a :class:`ConfigError`, and so is a setting the policy does not
        read (a BAI setting on ``llm2ucb``: docs/policies.md), so no setting is silently
        ignored. The constructor itself stays lenient about unread fields, which keep
        their defaults in the kernels' parameter row.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown experiment parameter(s): {', '.join(unknown)}")
        params = cls(**data)
        row = TABLE[params.policy]
        unread = [name for name in data if name != "policy" and name not in row.accepts]
        if unread:
            raise ConfigError(f"policy {params.policy!r} does not use {', '.join(unread)}; "
                              f"it reads {', '.join(row.accepts)}")
        return params
