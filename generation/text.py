"""Prompts and the clean-up of sampled text (pure: no model)."""

from __future__ import annotations

import re
from typing import Sequence

from lola.export.text import clean_text

SYSTEM = ("You write headlines for a news website. Reply with exactly one new headline: "
          "no quotes, no explanation, at most 15 words.")
#: Existing headlines shown in the prompt (the rest would only lengthen it).
MAX_EXAMPLES = 4
MAX_BRIEF_CHARS = 600
_PREFIX = re.compile(r"^\s*(here'?s?( is)?( a| one| the)?[^:]{0,60}:|headline\s*\d*\s*:|title\s*:|new headline\s*:)\s*",
                     re.IGNORECASE)
_QUOTES = "\"'“”‘’*#`"


def prompt_messages(brief: str, existing: Sequence[str] = ()) -> list[dict[str, str]]:
    brief = clean_text(brief)[:MAX_BRIEF_CHARS]
    user = f"Story: {brief}"
    shown = [clean_text(e) for e in existing[:MAX_EXAMPLES] if clean_text(e)]
    if shown:
        user += "\nHeadlines already tested:\n" + "\n".join(f"- {e}" for e in shown)
        user += "\nWrite a different, better headline."
    else:
        user += "\nWrite a headline for this story."
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def clean_candidate(raw: str) -> str:
    """First line, without 'Here is a headline:'-style prefixes and wrapping quotes."""
    line = next((part for part in raw.strip().splitlines() if part.strip()), "")
    line = _PREFIX.sub("", line).strip()
    line = line.strip(_QUOTES).strip()
    if line.endswith(":"):  # an announcement ("Here's a revised headline:") with no headline after it
        return ""
    return " ".join(line.split())


def dedup_key(text: str) -> str:
    """Candidates that differ only in case, spacing or punctuation are one candidate."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())
