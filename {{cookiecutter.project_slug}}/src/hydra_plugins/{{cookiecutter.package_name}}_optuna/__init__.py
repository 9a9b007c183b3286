"""Hydra looks for plugins in the ``hydra_plugins`` namespace; this one is the package's Optuna sweeper."""
