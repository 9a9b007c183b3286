"""Model builders: each takes its hyperparameters plus ``data`` (a DataInfo)."""
