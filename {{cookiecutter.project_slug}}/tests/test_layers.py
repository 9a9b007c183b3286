"""The package's layers import downwards only, without circles, and the trainer's config matches its arguments."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import yaml

from conftest import CONFIG_DIR, PACKAGE, PROJECT_ROOT

PLUGIN = f"hydra_plugins.{PACKAGE}_optuna"  # the Optuna sweeper, in Hydra's plugin namespace
# A module may import its own part of the package and any part of a lower layer, never a higher one.
LAYERS = {
    "errors": 0,
    "runtime": 1,
    "utils": 1,  # run-time facts and small helpers
    "rules": 1,  # <part>/rules.py: what an owner's values accept, torch-free, read by config before torch loads
    "config": 2,  # where the configs are, their resolvers, the checks of a composed config (no torch)
    "data": 2,
    "tracking": 2,
    "models": 3,
    "tasks": 3,
    "training": 4,
    "inference": 5,  # a trained run's config and weights (run_folder); predicting and exporting
    "compare": 5,  # run folders side by side (also its own entry point)
    PLUGIN: 6,  # the sweeper Hydra runs; it writes the comparison
    "train": 7,
    "memory": 7,
    "evaluate": 7,
    "predict": 7,
    "export": 7,
    "doctor": 7,
}


def module_files() -> dict[str, Path]:
    """Every module of the package and of its sweeper plugin, by dotted name (a package by its own name)."""
    found = {}
    for top in (PACKAGE, PLUGIN):
        for path in (PROJECT_ROOT / "src" / Path(*top.split("."))).rglob("*.py"):
            name = ".".join(path.relative_to(PROJECT_ROOT / "src").with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def part_of(module: str) -> str:
    """The layer key of a dotted module name (``pkg.training.trainer`` -> ``training``; the plugin is one part,
    and so are the owners' rule tables, ``pkg.<part>.rules``)."""
    if module.startswith(PLUGIN):
        return PLUGIN
    if module.count(".") == 2 and module.endswith(".rules"):
        return "rules"
    return module.split(".")[1] if module.count(".") >= 1 else module


def package_imports(path: Path, modules: dict[str, Path] | None = None, runtime_only: bool = False) -> set[str]:
    """Every module of the package or plugin that ``path`` imports, at any depth of the file (a name imported
    from a module counts as that module). ``runtime_only`` leaves out the imports under ``if TYPE_CHECKING:``."""
    modules = module_files() if modules is None else modules
    name = ".".join(path.relative_to(PROJECT_ROOT / "src").with_suffix("").parts)
    here = name.removesuffix(".__init__")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                typing_only |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    return {imported for imported in found if imported in modules and imported not in {here, PACKAGE}}


def back_edges() -> list[str]:
    edges = []
    modules = module_files()
    for module, path in sorted(modules.items()):
        source = part_of(module)
        if module == PACKAGE:
            continue
        for imported in package_imports(path, modules):
            target = part_of(imported)
            if target != source and LAYERS[target] >= LAYERS[source]:
                edges.append(f"{module} imports {imported}")
    return sorted(edges)


def reach_of(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module that ``start`` imports, directly or through others."""
    reach, todo = set(), [start]
    while todo:
        for imported in graph[todo.pop()] - reach:
            reach.add(imported)
            todo.append(imported)
    return reach


def import_circles() -> list[list[str]]:
    """Groups of modules that import each other, directly or around a loop (imports inside functions count:
    they run too; ``if TYPE_CHECKING:`` imports do not)."""
    modules = module_files()
    graph = {module: package_imports(path, modules, runtime_only=True) for module, path in modules.items()}
    reach = {module: reach_of(graph, module) for module in graph}
    circles: list[list[str]] = []
    for start in sorted(graph):
        circle = sorted(module for module in reach[start] if start in reach[module])
        if circle and circle not in circles:
            circles.append(circle)
    return circles


def test_every_module_has_a_layer() -> None:
    assert {part_of(module) for module in module_files()} - {PACKAGE} <= set(LAYERS)


def test_layers_point_one_way() -> None:
    assert back_edges() == []


def test_no_import_circles() -> None:
    assert import_circles() == []


def test_the_walk_sees_a_back_edge_and_a_circle(tmp_path: Path, monkeypatch) -> None:
    """The checks themselves can fail: a data module importing the trainer is reported, and so are two
    modules of one part that import each other (one of them inside a function)."""
    package = tmp_path / "src" / PACKAGE
    (package / "data").mkdir(parents=True)
    (tmp_path / "src" / "hydra_plugins" / f"{PACKAGE}_optuna").mkdir(parents=True)
    (package / "training").mkdir()
    (package / "tasks").mkdir()
    (package / "training" / "trainer.py").write_text("")
    (package / "tasks" / "base.py").write_text("")
    (package / "data" / "bad.py").write_text(f"from {PACKAGE}.training import trainer\nfrom ..tasks import base\n")
    (package / "data" / "one.py").write_text("def f():\n    from . import two\n")
    (package / "data" / "two.py").write_text(f"from {PACKAGE}.data.one import f\n")
    monkeypatch.setitem(globals(), "PROJECT_ROOT", tmp_path)
    assert back_edges() == [
        f"{PACKAGE}.data.bad imports {PACKAGE}.tasks.base",
        f"{PACKAGE}.data.bad imports {PACKAGE}.training.trainer",
    ]
    assert import_circles() == [[f"{PACKAGE}.data.one", f"{PACKAGE}.data.two"]]


LM_WORDS = re.compile(r"lora|quantiz|peft|bitsandbytes|\.generate\(|temperature|top_p|max_new_tokens", re.IGNORECASE)


def command_help(command: str, capsys) -> str:
    import importlib

    module = importlib.import_module(f"{PACKAGE}.{command}")
    try:
        getattr(module, command)(["--help"])
    except SystemExit as stop:
        assert stop.code == 0
    return capsys.readouterr().out


def test_task_code_stays_with_its_task(capsys) -> None:
    """A render without a causal LM holds no LoRA, quantization or generation code and lists no LM option in
    ``predict``/``export --help``; each task's options are listed exactly where its inference module is."""
    package = PROJECT_ROOT / "src" / PACKAGE
    has_lm, has_images = ((package / "tasks" / f"{name}.py").is_file() for name in ("causal_lm", "classification"))
    helps = {command: command_help(command, capsys) for command in ("predict", "export")}
    assert ("max_new_tokens" in helps["predict"] and "merge_lora" in helps["export"]) == has_lm
    assert ("top_k" in helps["predict"] and "format=safetensors|onnx" in helps["export"]) == has_images
    if not has_lm:
        sources = [*package.rglob("*"), *(PROJECT_ROOT / "src" / "hydra_plugins").rglob("*")]
        mentions = {
            str(path.relative_to(PROJECT_ROOT)): sorted(set(LM_WORDS.findall(path.read_text(encoding="utf-8"))))
            for path in sources
            if path.is_file() and path.suffix in {".py", ".md", ".html", ".txt", ".jsonl"}
        }
        assert {path: words for path, words in mentions.items() if words} == {}
        assert not LM_WORDS.search(helps["predict"] + helps["export"])


def test_the_lm_word_check_sees_lm_code() -> None:
    assert LM_WORDS.search("model = model.merge_and_unload()  # LoRA") and LM_WORDS.search("out = m.generate(x)")
    assert not LM_WORDS.search("logits = model(images).softmax(1)")


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


def owner_arguments() -> dict[str, set[str]]:
    """What each config node's owners take, by node: the trainer's arguments (and its nested options), every data
    module's, every scheduler's and task's, and the keys of every optimizer config."""
    import importlib

    from {{ cookiecutter.package_name }}.training import schedulers
    from {{ cookiecutter.package_name }}.training.early_stopping import EarlyStopping
    from {{ cookiecutter.package_name }}.training.fsdp import Sharding
    from {{ cookiecutter.package_name }}.training.rules import COMPILE_OPTIONS
    from {{ cookiecutter.package_name }}.training.trainer import Trainer

    def taken(*callables: Any) -> set[str]:
        return {name for call in callables for name in inspect.signature(call).parameters}

    def targets(group: str) -> list[Any]:
        found = []
        for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
            target = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("_target_", "")
            if target.startswith(f"{PACKAGE}."):
                module, _, name = target.rpartition(".")
                found.append(getattr(importlib.import_module(module), name))
        return found

    def initializers(classes: list[Any]) -> list[Any]:
        return [cls.__init__ for target in classes for cls in target.__mro__ if "__init__" in vars(cls)]

    optimizer_keys = {
        key
        for path in (CONFIG_DIR / "optimizer").glob("*.yaml")
        for key in yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    }
    return {
        "trainer": taken(Trainer)
        | {f"early_stopping.{name}" for name in taken(EarlyStopping)}
        | {f"fsdp.{name}" for name in taken(Sharding)}
        | {f"compile.{name}" for name in COMPILE_OPTIONS},
        "data": taken(*initializers(targets("data"))),
        "task": taken(*initializers(targets("task"))),
        "optimizer": optimizer_keys,
        "scheduler": {
            name for function in vars(schedulers).values() if inspect.isfunction(function) for name in taken(function)
        },
    }


def test_every_rule_names_an_argument_its_owner_takes() -> None:
    """The owners' tables cannot drift from their code: each rule is of an argument some owner of that config
    node takes (a renamed argument leaves its rule behind and fails here), and each owner checks its own."""
    from {{ cookiecutter.package_name }}.config.checks import OWNERS

    arguments = owner_arguments()
    for node, rules in OWNERS.items():
        if node:
            assert set(rules) - arguments[node] == set(), node
    assert set(OWNERS) == {"", *arguments}
