"""Fixtures of the integration tests (the session-wide Ray is in tests/conftest.py)."""
