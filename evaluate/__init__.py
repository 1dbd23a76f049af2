"""lola.evaluate: off-policy evaluation of fixed policies from logged decisions (``lola evaluate``).

See docs/evaluation.md. :mod:`~lola.evaluate.estimators` (IPS, SNIPS, DR, switch-DR and a
bootstrap), :mod:`~lola.evaluate.policies` (target policies and Li et
al.'s replay for learning policies on uniform logs), :mod:`~lola.evaluate.heldout` (a variant never
shown); the logs themselves come from :mod:`lola.stream.decision_log`.
"""
