"""Benchmarks: run from the repo root as modules, e.g. `python -m benchmarks.throughput --help`."""
