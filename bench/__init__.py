"""lola.bench (see the README's architecture section)."""
