"""Packaging beyond pyproject.toml: ``configs/`` ships inside the package as ``{{ cookiecutter.package_name }}.configs``.

A source checkout reads ``configs/`` where it is; an installed wheel holds a copy that Hydra
finds through ``pkg://{{ cookiecutter.package_name }}.configs`` (see ``src/{{ cookiecutter.package_name }}/config_source.py``).
"""

from setuptools import find_packages, setup

PACKAGE = "{{ cookiecutter.package_name }}"

setup(
    packages=[*find_packages("src"), f"{PACKAGE}.configs"],
    package_dir={"": "src", f"{PACKAGE}.configs": "configs"},
    package_data={PACKAGE: ["data/*.txt", "inference/*.md"], f"{PACKAGE}.configs": ["*.yaml", "**/*.yaml"]},
)
