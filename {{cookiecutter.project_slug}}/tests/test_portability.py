"""What Windows and macOS need: loaders that survive the spawn start method, no POSIX-only imports."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from conftest import PROJECT_ROOT, compose_config

POSIX_ONLY = {"fcntl", "resource", "pwd", "grp", "termios", "posix", "pty", "tty"}


def test_loader_works_with_spawned_workers() -> None:
    """Windows and macOS spawn loader workers: data set and collate_fn are pickled into a fresh process."""
    datamodule = instantiate(compose_config(["debug=fast"]).data)
    datamodule.setup()
    loader = datamodule.loader("train")
    spawned = DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=loader.sampler,
        num_workers=1,
        collate_fn=loader.collate_fn,
        multiprocessing_context="spawn",
    )
    for name in ("train", "val", "test"):
        pickle.loads(pickle.dumps(datamodule.dataset(name)))
    expected = next(iter(loader))
    received = next(iter(spawned))
    for mine, theirs in zip(
        expected if isinstance(expected, (list, tuple)) else [expected],
        received if isinstance(received, (list, tuple)) else [received],
        strict=True,
    ):
        assert torch.equal(mine, theirs)


def module_level_imports(path: Path) -> set[str]:
    """Modules imported at a module's top level outside ``try`` (where a missing one cannot be caught)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_no_posix_only_imports_at_module_level() -> None:
    offenders = {
        str(path.relative_to(PROJECT_ROOT)): sorted(module_level_imports(path) & POSIX_ONLY)
        for path in (PROJECT_ROOT / "src").rglob("*.py")
    }
    assert not {path: names for path, names in offenders.items() if names}
