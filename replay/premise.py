"""How much can one experiment's own clicks say about its prior? (`lola replay ideal-observer`)

An adaptive prior strength (LOLA-EB) must learn, inside one experiment and while it
runs, whether the LLM prior deserves trust. This module measures the best any such
rule could do on the archive's CTRs, with the easiest possible question: is the prior
exact, or exactly rank-reversed (the two kinds of test `synthetic-prior` writes)?

An ideal observer knows both hypotheses, sees ``tau`` impressions of every headline
(uniform traffic; a bandit starves the arms its prior ranks low and sees less of them)
and answers with the likelihood-ratio test, the most powerful test between two simple
hypotheses. Its accuracy, averaged over tests, says how much a test's own clicks can
tell about its prior by that horizon; 0.5 is a coin flip.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lola.errors import ConfigError

_CTR_EPS = 1e-5
_LLR_TIE = 1e-9


def reversed_ranking(ctrs: np.ndarray) -> np.ndarray:
    """The same CTRs in reversed rank order: the best arm gets the worst CTR, and so on."""
    ranks = np.argsort(np.argsort(ctrs, kind="stable"), kind="stable")  # 0 = worst
    return np.sort(ctrs)[::-1][ranks]


def ideal_observer_accuracy(ctrs: np.ndarray, tau: int, draws: int, rng: np.random.Generator) -> float | None:
    """P(likelihood-ratio test picks "exact" | the prior is exact) for one test.

    ``None`` when the reversed prior equals the exact one (all CTRs tied): there is
    nothing to tell apart. Ties of the statistic count half.
    """
    if tau < 1 or draws < 1:
        raise ConfigError(f"tau and draws must be >= 1, got {tau} and {draws}")
    p = np.clip(np.asarray(ctrs, dtype=np.float64), _CTR_EPS, 1.0 - _CTR_EPS)
    q = reversed_ranking(p)
    if np.allclose(p, q):
        return None
    clicks = rng.binomial(tau, p, size=(draws, p.size))
    llr = (clicks * np.log(p / q) + (tau - clicks) * np.log((1.0 - p) / (1.0 - q))).sum(axis=1)
    # Exact ties (e.g. no clicks at all) cancel only up to rounding, so they are ties within _LLR_TIE.
    tie = np.abs(llr) < _LLR_TIE
    return float((~tie & (llr > 0)).mean() + 0.5 * tie.mean())


def ideal_observer(tests_ctrs: Sequence[np.ndarray], taus: Sequence[int], draws: int, seed: int) -> dict:
    """Mean ideal-observer accuracy over tests, per tau (JSON-ready)."""
    out = []
    for tau in taus:
        rng = np.random.default_rng([seed, int(tau)])
        acc = [a for a in (ideal_observer_accuracy(c, int(tau), draws, rng) for c in tests_ctrs) if a is not None]
        out.append({"tau": int(tau), "accuracy": float(np.mean(acc)) if acc else None, "tests": len(acc),
                    "tests_all_tied": len(tests_ctrs) - len(acc)})
    return {"question": "exact vs rank-reversed prior, from one test's clicks at tau impressions per headline",
            "draws": draws, "seed": seed, "results": out}
