"""Benchmarks: each ``bench_*.py`` module has a ``main()`` that measures and prints figures.

Nothing here asserts; `make bench` (``python -m bench``) runs every module in turn.
"""
