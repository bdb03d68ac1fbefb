"""Crash-safety child (tests/reliability/test_crash_safety.py)."""
