"""Benchmarks that print figures: ``python -m tests.bench.latency`` (see README.md here).

They are not tests: nothing in them asserts a timing goal.
"""
