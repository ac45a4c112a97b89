"""Benchmarks of every reweigh stage against named baselines: `python -m bench [--quick]`."""
