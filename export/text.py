"""How a headline (and optional context) becomes the model's input string.

Shared by training and serving, so it imports nothing heavier than the standard library.
"""

from __future__ import annotations

import html
import re

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")
CONTEXT_SEPARATOR = "\n"
TEXT_MODES = ("headline", "headline_context")


def clean_text(text: str) -> str:
    """Strip HTML tags and entities, and collapse whitespace."""
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", text or ""))).strip()


def model_text(headline: str, context: str = "", text_mode: str = "headline") -> str:
    """The string the model reads: the headline, or the headline then its cleaned context."""
    headline = clean_text(headline)
    if text_mode == "headline":
        return headline
    if text_mode == "headline_context":
        context = clean_text(context)
        return f"{headline}{CONTEXT_SEPARATOR}{context}" if context else headline
    raise ValueError(f"unknown text mode {text_mode!r}; choose one of {TEXT_MODES}")
