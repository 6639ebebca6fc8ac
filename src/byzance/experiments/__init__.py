"""Experiments: the demonstration, benchmarks and (later) runs, grids and reports."""
