"""What Windows and macOS need: loaders that survive the spawn start method, no POSIX-only imports."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

from hydra.utils import instantiate

from conftest import PROJECT_ROOT, compose_config

POSIX_ONLY = {"fcntl", "resource", "pwd", "grp", "termios", "posix", "pty", "tty"}


def test_loader_parts_pickle_for_spawned_workers() -> None:
    """With num_workers > 0, Windows and macOS pickle the dataset and collate_fn into each worker."""
    datamodule = instantiate(compose_config(["debug=fast"]).data)
    datamodule.setup()
    for split in ("train", "val", "test"):
        loader = datamodule.loader(split)
        restored = pickle.loads(pickle.dumps(loader.dataset))
        assert len(restored) == len(loader.dataset)
        pickle.dumps(loader.collate_fn)
        pickle.dumps(loader.worker_init_fn)


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
    offenders = {str(path.relative_to(PROJECT_ROOT)): sorted(module_level_imports(path) & POSIX_ONLY)
                 for path in (PROJECT_ROOT / "src").rglob("*.py")}
    assert not {path: names for path, names in offenders.items() if names}
