"""Experiment tracking: loggers receive numbers, figures and tables; plots draws the figures."""
