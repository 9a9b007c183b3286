"""Packaging beyond pyproject.toml: ``configs/`` ships inside the package as ``{{ cookiecutter.package_name }}.configs``,
and the Optuna sweeper's entry in Hydra's plugin namespace as ``hydra_plugins.{{ cookiecutter.package_name }}_optuna``.

A source checkout reads ``configs/`` where it is; an installed wheel holds a copy that Hydra
finds through ``pkg://{{ cookiecutter.package_name }}.configs`` (see ``src/{{ cookiecutter.package_name }}/config/source.py``).
"""

from setuptools import find_namespace_packages, find_packages, setup

PACKAGE = "{{ cookiecutter.package_name }}"

setup(
    packages=[
        *find_packages("src"),
        *find_namespace_packages("src", include=["hydra_plugins.*"]),
        f"{PACKAGE}.configs",
    ],
    package_dir={"": "src", f"{PACKAGE}.configs": "configs"},
    package_data={
        PACKAGE: ["data/*.txt", "inference/*.md", "comparison.html"],
        f"{PACKAGE}.configs": ["*.yaml", "**/*.yaml"],
    },
)
