"""lola.export (see the README's architecture section)."""
