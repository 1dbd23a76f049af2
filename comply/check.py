"""The one compliance checker: rule checks of a text against a :class:`~lola.comply.policy.Policy`.

Pure and cheap (a few compiled regexes per text), so the worker can run it before a
variant is registered; the generator and ``lola comply check`` call the same function.
"""

from __future__ import annotations

import fnmatch
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

from lola.comply.policy import Policy


@dataclass(frozen=True)
class Violation:
    rule: str        # max_length, min_length, shouting, banned_term, banned_pattern, unverifiable_claim, disclosure
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"


@dataclass(frozen=True)
class Verdict:
    """The result of one check; ``ok`` when there is no violation."""

    violations: tuple[Violation, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def reason(self) -> str | None:
        """One line naming every violation (None when compliant)."""
        return "; ".join(map(str, self.violations)) or None

    def to_dict(self) -> dict:
        return {"compliant": self.ok, "violations": [{"rule": v.rule, "detail": v.detail} for v in self.violations]}


@dataclass(frozen=True)
class _Compiled:
    terms: tuple[tuple[str, re.Pattern], ...]
    patterns: tuple[tuple[str, re.Pattern], ...]
    claims: tuple[tuple[str, re.Pattern], ...]


def normalise(text: str) -> str:
    """NFKC (full-width and styled letters become plain ones) and collapsed whitespace."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


@lru_cache(maxsize=32)
def _compiled(policy: Policy) -> _Compiled:
    # Policies are frozen (hashable), so each is compiled once per process.
    def term(t: str) -> re.Pattern:
        words = r"\s+".join(re.escape(w) for w in normalise(t).split())
        return re.compile(rf"(?<!\w){words}(?!\w)", re.IGNORECASE)

    return _Compiled(
        tuple((t, term(t)) for t in policy.banned_terms),
        tuple((p, re.compile(p, re.IGNORECASE)) for p in policy.banned_patterns),
        tuple((p, re.compile(p, re.IGNORECASE)) for p in policy.unverifiable_claims),
    )


def shouting_ratio(text: str) -> tuple[float, int]:
    """(share of upper-case among letters, number of letters)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0, 0
    return sum(c.isupper() for c in letters) / len(letters), len(letters)


def check_text(policy: Policy, text: str, experiment_id: str | None = None) -> Verdict:
    """Every rule of ``policy`` on ``text`` (the disclosure rules only when ``experiment_id`` is given)."""
    clean = normalise(text)
    found: list[Violation] = []
    if len(clean) > policy.max_length:
        found.append(Violation("max_length", f"{len(clean)} characters > {policy.max_length}"))
        clean = clean[: policy.max_length]  # the other rules read at most max_length characters
    if len(clean) < policy.min_length:
        found.append(Violation("min_length", f"{len(clean)} characters < {policy.min_length}"))
    ratio, letters = shouting_ratio(clean)
    if letters >= policy.shouting.min_letters and ratio > policy.shouting.max_ratio:
        found.append(Violation("shouting", f"{ratio:.0%} upper-case letters > {policy.shouting.max_ratio:.0%}"))
    compiled = _compiled(policy)
    for rule, items in (("banned_term", compiled.terms), ("banned_pattern", compiled.patterns),
                        ("unverifiable_claim", compiled.claims)):
        for source, rx in items:
            m = rx.search(clean)
            if m:
                found.append(Violation(rule, f"{m.group(0)!r} matches {source!r}"))
    if experiment_id is not None:
        for rule in policy.required_disclosures:
            if fnmatch.fnmatchcase(experiment_id, rule.experiments) and not any(
                    normalise(p).casefold() in clean.casefold() for p in rule.any_of):
                found.append(Violation("disclosure", f"experiment {experiment_id!r} needs one of {list(rule.any_of)}"))
    return Verdict(tuple(found))
