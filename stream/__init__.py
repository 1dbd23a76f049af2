"""lola.stream (see the README's architecture section)."""
