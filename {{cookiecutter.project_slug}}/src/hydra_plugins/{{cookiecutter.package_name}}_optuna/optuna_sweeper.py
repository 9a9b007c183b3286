"""``hydra/sweeper=optuna``: the class Hydra instantiates; the code is ``{{ cookiecutter.package_name }}.sweeper``."""

from {{ cookiecutter.package_name }}.sweeper import StudySweeper


class OptunaSweeper(StudySweeper):
    """Hydra accepts sweepers defined in its plugin namespace only."""
