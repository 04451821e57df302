"""The benchmark suite: ``make bench`` / ``python -m bench [--quick]``.

See ``bench/__main__.py`` for what runs and ``docs/BENCHMARKS.md`` for the results.
"""
