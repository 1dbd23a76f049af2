"""Column layout of the state's per-experiment matrix ``exp_f`` and per-arm cache ``ucb``.

Shared by :mod:`lola.kernels.core`, :mod:`lola.kernels.ts_reference` and the state (Numba
freezes these module globals as constants). Pure Python, no Numba.
"""

from __future__ import annotations

# Columns of the per-experiment parameter/clock matrix ``exp_f[E, N_EXP_F]``. One row per
# experiment keeps everything a decision reads about its experiment in three 64-byte cache lines (23 float64).
F_ALPHA = 0
F_N_AUX = 1
F_GAMMA = 2
F_LAMBDA = 3
F_HORIZON = 4
F_EXPLORE_N = 5
F_MIN_TRAFFIC = 6
F_BURN_IN = 7
F_TS_A0 = 8
F_TS_B0 = 9
F_EB_STRENGTH = 10
F_LIN_ALPHA = 11
F_RIDGE = 12
F_BAI_EPS = 13
F_BAI_GAMMA = 14
F_BAI_DELTA = 15
F_PROP_DRAWS = 16  # propensity_draws: unused since #20 (quadrature), kept so the layout and format stay
F_T = 17  # 1 + (discounted) impressions so far: Algorithm 1's t
F_STEPS = 18  # raw impressions so far (burn-in, E&C phase)
F_SQRT_LOG_T = 19  # sqrt(log t), cached by update for the UCB family
F_BAI_BERNSTEIN = 20  # 1.0: Algorithm 2 with the empirical-Bernstein radius, 0.0: Hoeffding
F_TS_REFRESH = 21  # ts_refresh: relative move of an arm's Beta (a, b) that refreshes TS's reference posterior
F_TS_REF = 22  # TS reference state: REF_NONE, REF_POSTERIOR (ucb rows U_TS_A/B current) or REF_ALLOCATION (+ U_TS_P)
N_EXP_F = 23

REF_NONE = 0.0
REF_POSTERIOR = 1.0
REF_ALLOCATION = 2.0

# Rows of the per-arm policy cache ``ucb[E, N_UCB, K]``. LLM-2UCBs (refreshed whenever the arm's
# statistics or prior change): index = min(m1 + a s1, m2 + a s2), a = alpha sqrt(log t).
U_M1, U_S1, U_M2, U_S2 = 0, 1, 2, 3
# TS / LLM-TS reference posterior (ts_reference): Beta (a, b) per arm as of the last refresh
# (a = -1: point mass at mu), and its allocation P(arm's draw is the largest), the propensity.
U_TS_A, U_TS_B, U_TS_P = 4, 5, 6
N_UCB = 7
