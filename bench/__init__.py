"""Benchmark scripts (run as `python bench/NAME.py`); a package so that `from bench import results` works."""
