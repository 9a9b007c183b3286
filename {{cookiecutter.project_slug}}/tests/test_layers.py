"""The package's layers import downwards only, and the trainer's config matches its arguments."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import yaml

from conftest import CONFIG_DIR, PACKAGE, PROJECT_ROOT

# A module may import its own part of the package and any part of a lower layer, never a higher one.
LAYERS = {
    "errors": 0,
    "runtime": 1,
    "utils": 1,  # run-time facts and small helpers
    "config": 2,  # where the configs are, their resolvers, the checks of a composed config (no torch)
    "data": 2,
    "tracking": 2,
    "models": 3,
    "tasks": 3,
    "training": 4,
    "inference": 5,  # a trained run's config and weights (run_folder); predicting and exporting
    "compare": 5,  # run folders side by side (also its own entry point)
    "train": 7,
    "memory": 7,
    "evaluate": 7,
    "predict": 7,
    "export": 7,
    "doctor": 7,
}


def part_of(module: str) -> str:
    """The layer key of a dotted module name inside the package (``pkg.training.trainer`` -> ``training``)."""
    return module.split(".")[1] if module.count(".") >= 1 else module


def package_imports(path: Path) -> set[str]:
    """Every module of the package that ``path`` imports, at any depth of the file."""
    package_dir = PROJECT_ROOT / "src" / PACKAGE
    here = ".".join((PACKAGE, *path.relative_to(package_dir).with_suffix("").parts))
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            found |= {f"{base}.{alias.name}" if base == PACKAGE else base for alias in node.names}
    return {name for name in found if name.split(".")[0] == PACKAGE and name != PACKAGE}


def back_edges() -> list[str]:
    edges = []
    for path in sorted((PROJECT_ROOT / "src" / PACKAGE).rglob("*.py")):
        module = ".".join((PACKAGE, *path.relative_to(PROJECT_ROOT / "src" / PACKAGE).with_suffix("").parts))
        source = part_of(module)
        if source == "__init__":
            continue
        for imported in package_imports(path):
            target = part_of(imported)
            if target != source and LAYERS[target] >= LAYERS[source]:
                edges.append(f"{module} imports {imported}")
    return sorted(edges)


def test_every_module_has_a_layer() -> None:
    parts = {
        part_of(".".join((PACKAGE, *path.relative_to(PROJECT_ROOT / "src" / PACKAGE).with_suffix("").parts)))
        for path in (PROJECT_ROOT / "src" / PACKAGE).rglob("*.py")
    }
    assert parts - {"__init__"} <= set(LAYERS)


def test_layers_point_one_way() -> None:
    assert back_edges() == []


def test_the_walk_sees_a_back_edge(tmp_path: Path, monkeypatch) -> None:
    """The check itself can fail: a data module importing the trainer is reported."""
    package = tmp_path / "src" / PACKAGE
    (package / "data").mkdir(parents=True)
    (package / "data" / "bad.py").write_text(f"from {PACKAGE}.training import trainer\nfrom ..tasks import base\n")
    monkeypatch.setitem(globals(), "PROJECT_ROOT", tmp_path)
    assert back_edges() == [
        f"{PACKAGE}.data.bad imports {PACKAGE}.tasks",
        f"{PACKAGE}.data.bad imports {PACKAGE}.training",
    ]


def test_trainer_config_lists_the_trainer_arguments() -> None:
    """``configs/trainer/default.yaml`` holds exactly the Trainer's arguments, with its defaults."""
    from {{ cookiecutter.package_name }}.training.trainer import Trainer

    config = yaml.safe_load((CONFIG_DIR / "trainer" / "default.yaml").read_text(encoding="utf-8"))
    parameters = inspect.signature(Trainer).parameters
    injected = {"precision", "output_dir", "loggers"}  # built by train.py
    assert set(config) - {"_target_"} == set(parameters) - injected
    for name, parameter in parameters.items():
        if name not in injected and parameter.default is not None:
            assert config[name] == parameter.default, name
