"""Run folders, result store, sweeps and tables."""
