"""Runs: one config system, building a training from a config, run directories.

The layer between the simulator (below) and the experiments and the
distributed package (above): it reads and checks a config, builds the data,
model, rule and simulator it describes, and owns the run directory (config,
metrics, checkpoints, summary, plots).
"""
