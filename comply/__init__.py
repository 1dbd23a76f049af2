"""``lola.comply``: the compliance policy and its one checker (pure: no I/O beyond reading a policy file).

Used by the worker (:class:`ComplianceGate`, the ``VariantGate`` of :mod:`lola.stream`),
the generator (``lola variants generate`` drops what fails) and ``lola comply check``.
See docs/compliance.md.
"""

from lola.comply.check import Verdict, Violation, check_text, normalise, shouting_ratio
from lola.comply.gate import ACTIVE, BLOCKED, PENDING, ComplianceGate, StateChange
from lola.comply.policy import Policy, load_policy, parse_policy

__all__ = ["ACTIVE", "BLOCKED", "PENDING", "ComplianceGate", "Policy", "StateChange", "Verdict", "Violation",
           "check_text", "load_policy", "normalise", "parse_policy", "shouting_ratio"]
