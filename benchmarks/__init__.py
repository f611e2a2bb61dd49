"""Benchmarks: programs that measure and print tables, not timed tests.

See docs/performance.md.
"""
