"""Benchmarks and load tests: measurements, never timed unit tests (see BENCHMARKS.md)."""
