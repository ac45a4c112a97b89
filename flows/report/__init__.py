"""The report stage (`python -m flows.report`, dvc.yaml `report`): every model's predictions side by side.

    flow.py         the stage: loads the predictions, writes reports/metrics.json, plots, figures, report.md
    scores.py       per-model metrics, confidence intervals and the pairs of models compared
    stats.py        paired tests (McNemar, bootstrap) and the verdict
    thresholds.py   decision thresholds chosen on validation, reported on test
    classes.py      per-class results
    ensemble.py     how differently the ensemble's members err
    models.py       tensor shapes and attention examples of the neural models
    embeddings.py   the semantic vector space of the learned embedding
"""
