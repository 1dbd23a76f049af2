"""The declarative compliance policy: a YAML file validated by pydantic (frozen, one-line errors).

A policy says what a variant's text may not contain and what it must contain:

* ``max_length`` / ``min_length``: characters, after stripping;
* ``shouting``: the share of upper-case letters above which a text "shouts"
  (texts with fewer than ``min_letters`` letters are not judged: "NASA" is fine);
* ``banned_terms``: words or phrases, matched case-insensitively as whole words;
* ``banned_patterns`` and ``unverifiable_claims``: regular expressions (case-insensitive);
  claims are the guarantees and superlatives a publisher cannot prove;
* ``required_disclosures``: per experiment (a glob on ``experiment_id``), at least one of
  the phrases must appear (e.g. ``Sponsored`` on paid experiments).

Limits are explicit because the worker runs these rules on every new variant: at most
:data:`MAX_RULES` terms/patterns per list and :data:`MAX_PATTERN_CHARS` characters per
pattern (Python's ``re`` has no timeout; short patterns over texts of at most
``max_length`` characters keep the check cheap).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lola.errors import ConfigError

MAX_RULES = 500
MAX_PATTERN_CHARS = 300
#: The event schema's own limit on a variant's text (docs/events.md); a policy cannot allow more.
MAX_TEXT_CHARS = 10_000
DEFAULT_POLICY = "default_policy.yaml"

Phrase = Annotated[str, Field(min_length=1, max_length=MAX_PATTERN_CHARS)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Shouting(_Frozen):
    max_ratio: float = Field(0.6, gt=0.0, le=1.0)
    min_letters: int = Field(12, ge=1)


class Disclosure(_Frozen):
    """Experiments whose id matches ``experiments`` (fnmatch glob) must contain one of ``any_of``."""

    experiments: Phrase
    any_of: tuple[Phrase, ...] = Field(min_length=1, max_length=MAX_RULES)


def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


class Policy(_Frozen):
    """A validated compliance policy (see the module docstring for each rule)."""

    version: int = Field(1, ge=1, le=1)
    name: str = "unnamed"
    max_length: int = Field(120, ge=1, le=MAX_TEXT_CHARS)
    min_length: int = Field(1, ge=0)
    shouting: Shouting = Shouting()
    banned_terms: tuple[Phrase, ...] = Field((), max_length=MAX_RULES)
    banned_patterns: tuple[Phrase, ...] = Field((), max_length=MAX_RULES)
    unverifiable_claims: tuple[Phrase, ...] = Field((), max_length=MAX_RULES)
    required_disclosures: tuple[Disclosure, ...] = Field((), max_length=MAX_RULES)

    @field_validator("banned_patterns", "unverifiable_claims")
    @classmethod
    def _regexes_compile(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            _compile(pattern)
        return value

    @model_validator(mode="after")
    def _lengths_ordered(self) -> "Policy":
        if self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} > max_length {self.max_length}")
        return self


def parse_policy(text: str, source: str = "policy") -> Policy:
    """A :class:`Policy` from YAML text; ConfigError (one line) when it is not valid."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a policy is a YAML mapping, got {type(data).__name__}")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise ConfigError.from_validation(exc, f"{source}:") from None


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy in ``path``, or the default policy shipped with the package when ``path`` is None."""
    if path is None:
        return parse_policy(resources.files("lola.comply").joinpath(DEFAULT_POLICY).read_text("utf-8"),
                            f"(default) {DEFAULT_POLICY}")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read policy {path}: {exc}") from None
    return parse_policy(text, str(path))
