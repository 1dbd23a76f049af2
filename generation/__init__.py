"""``lola.generation``: generated variants (see docs/generation.md)."""
