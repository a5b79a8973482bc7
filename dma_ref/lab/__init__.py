"""The experiments built on the package: recall tasks, training runs and benchmarks."""
