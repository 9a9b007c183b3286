"""The Hydra configs. This file makes the folder a package, so that a wheel holds it as
``{{ cookiecutter.package_name }}.configs`` and Hydra finds it there (``pkg://``) after ``pip install .``."""
