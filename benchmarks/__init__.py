"""`make bench`: performance measurements written to docs/benchmarks.md.

Each benchmark module has `run() -> Section`. Every speed figure is a ratio against a reference
measured in the same process on the same machine, so numbers from different machines compare.
"""
