"""Benchmarks of the local runtime (run as modules, not collected by pytest)."""
