"""Export tests use the tiny-model fixtures of tests/conftest.py (shared with the stream tests)."""
