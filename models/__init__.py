"""The models reweigh trains: the neural ones by the name params.yaml gives them (`model.<name>`, models.registry),
and the linear baselines (models.baselines). Importing this package imports nothing else, so the baseline and
ensemble stages load scikit-learn without torch."""
