"""Benchmarks of the harness against raw Docker and git (see docs/performance.md)."""
