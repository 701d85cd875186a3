"""Worked examples (run with the project's test suite)."""
