"""mqlflow benchmarks: ``python -m bench.run --quick`` (see BENCHMARKS.md)."""
