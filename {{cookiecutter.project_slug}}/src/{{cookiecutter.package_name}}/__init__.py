"""Deep-learning experiments with Hydra and PyTorch: run ``python -m {{ cookiecutter.package_name }}.train``."""

__version__ = "0.1.0"
