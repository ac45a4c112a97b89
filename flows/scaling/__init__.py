"""Scaling laws for every model: learning curves (and size curves) from a DVC experiment queue.

grid.py: the points as DVC experiments (queue, run, find again); fit.py: power laws through them;
report.py: reports/scaling.md, .json and figures; run.py: `reweigh scaling`, the three together.
"""
