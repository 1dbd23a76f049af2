"""``ComplianceGate``: the worker's variant gate (the ``VariantGate`` protocol of :mod:`lola.stream`).

``check(experiment_id, variant_id, text) -> (state, reason)`` runs the policy's rule
checks inline, before the variant is registered:

* a rule fails: ``("blocked", reason)`` (never served; the worker dead-letters it as
  ``noncompliant`` and keeps the reason in the snapshot);
* rules pass, no classifier configured: ``("active", None)``;
* rules pass and a classifier is configured: ``("pending", ...)``: the variant is not
  served until :meth:`classify` has run off the hot path. This is the opposite of the
  priors, which never make a decision wait: an unchecked text must not reach users.

:meth:`recheck` runs a new policy over running variants (a policy change) and returns
the variants whose state changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from lola.comply.check import Verdict, check_text
from lola.comply.policy import Policy

ACTIVE, BLOCKED, PENDING = "active", "blocked", "pending"
#: ``classifier(text) -> reason or None``: a reason blocks the text; None clears it.
Classifier = Callable[[str], "str | None"]


@dataclass(frozen=True)
class StateChange:
    experiment_id: str
    variant_id: str
    state: str
    reason: str | None


class ComplianceGate:
    """Rule checks inline, an optional classifier off the hot path (see the module docstring)."""

    def __init__(self, policy: Policy, classifier: Classifier | None = None) -> None:
        self.policy = policy
        self.classifier = classifier

    def verdict(self, experiment_id: str, text: str) -> Verdict:
        return check_text(self.policy, text, experiment_id)

    def check(self, experiment_id: str, variant_id: str, text: str) -> tuple[str, str | None]:
        verdict = self.verdict(experiment_id, text)
        if not verdict.ok:
            return BLOCKED, verdict.reason
        if self.classifier is not None:
            return PENDING, "awaiting the compliance classifier"
        return ACTIVE, None

    def classify(self, experiment_id: str, variant_id: str, text: str) -> tuple[str, str | None]:
        """The off-path step for a ``pending`` variant: ``active``, or ``blocked`` with the classifier's reason."""
        if self.classifier is None:
            return ACTIVE, None
        reason = self.classifier(text)
        return (BLOCKED, f"classifier: {reason}") if reason else (ACTIVE, None)

    def recheck(self, variants: Iterable[tuple[str, str, str, str]], policy: Policy | None = None) -> list[StateChange]:
        """Adopt ``policy`` (if given) and re-check ``(experiment_id, variant_id, text, state)`` rows.

        Returns the changes: an ``active``/``pending`` variant the rules now fail becomes
        ``blocked``; a ``blocked`` one they now pass becomes ``active`` (or ``pending`` with
        a classifier). ``retired`` variants are left alone.
        """
        if policy is not None:
            self.policy = policy
        changes = []
        for experiment_id, variant_id, text, state in variants:
            if state not in (ACTIVE, PENDING, BLOCKED):
                continue
            new, reason = self.check(experiment_id, variant_id, text)
            if state == PENDING and new == PENDING:
                continue
            if new != state:
                changes.append(StateChange(experiment_id, variant_id, new, reason))
        return changes
