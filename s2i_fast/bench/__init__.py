"""Benchmarks: the one harness (harness.py) and `s2i-fast bench` (cli.py, engines.py)."""
