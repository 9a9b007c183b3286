"""Trim the rendered project to the options picked, then print the next steps.

One table maps each answer to the paths it removes; nothing else here depends on
the answers except the opt-in ``git init``. Stdlib only: no network, no installs,
no prompts.

Safe to run again on the same folder, and inside cruft's temporary renders: cruft renders
the project again (hooks included) in a temporary folder on every ``cruft diff`` and
``cruft update``. cruft puts ``_commit`` (the template commit) into every context it
renders, so under cruft the hook never runs ``git init``; nothing it does leaves the
rendered folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ANSWERS = json.loads(r'''{{ cookiecutter | tojson }}''')
PKG = "src/" + ANSWERS["package_name"]

# Files only a causal-LM task needs (the causal-LM issue adds its modules here).
LM_ONLY: list[str] = [
    "configs/task/causal_lm.yaml",
    "configs/data/text.yaml",
    "configs/model/causal_lm.yaml",
    "configs/quantization",
    "configs/experiment/tiny_lm.yaml",
    "configs/memory.yaml",
    f"{PKG}/data/text.py",
    f"{PKG}/data/sample_corpus.txt",
    f"{PKG}/models/hf_loader.py",
    f"{PKG}/data/hf_source.py",
    f"{PKG}/models/footprint.py",
    f"{PKG}/tasks/causal_lm.py",
    f"{PKG}/tasks/generation.py",
    f"{PKG}/memory.py",
    "tests/test_causal_lm.py",
    "tests/test_fsdp.py",
    f"{PKG}/inference/text.py",
    "tests/test_inference_text.py",
    "examples",
    "tests/test_quantized_cpu.py",
    "configs/data/chat.yaml",
    "configs/experiment/sft_tiny.yaml",
    f"{PKG}/data/chat.py",
    f"{PKG}/data/sample_chat.jsonl",
    f"{PKG}/inference/chat.py",
    f"{PKG}/tasks/chat_answers.py",
    "tests/test_chat.py",
]

VISION_ONLY = [
    "configs/task/classification.yaml",
    "configs/data/digits.yaml",
    "configs/data/torchvision.yaml",
    "configs/data/image_folder.yaml",
    "configs/data/fake.yaml",
    "configs/model/mlp.yaml",
    "configs/model/efficientnet.yaml",
    "configs/model/vit.yaml",
    "configs/model/timm.yaml",
    "configs/experiment/mlp.yaml",
    "configs/experiment/vit.yaml",
    "configs/experiment/efficientnet.yaml",
    f"{PKG}/data/digits.py",
    f"{PKG}/data/vision.py",
    f"{PKG}/data/download.py",
    f"{PKG}/models/mlp.py",
    f"{PKG}/models/timm_models.py",
    f"{PKG}/tasks/classification.py",
    "tests/test_vision.py",
    f"{PKG}/inference/images.py",
    "tests/test_inference_images.py",
]

# Each tracker's files: a render keeps those of the tracker its logger answer names (and always CSV).
WANDB = ["configs/logger/wandb.yaml", f"{PKG}/tracking/wandb_logger.py", "tests/test_wandb.py"]
MLFLOW = [
    "configs/logger/mlflow.yaml",
    f"{PKG}/tracking/mlflow_logger.py",
    f"{PKG}/tracking/mlflow_sync.py",
    "tests/test_mlflow.py",
]
TENSORBOARD = ["configs/logger/tensorboard.yaml", f"{PKG}/tracking/tensorboard_logger.py", "tests/test_tensorboard.py"]

# (answer, value) -> paths removed when the answer has that value.
REMOVE_WHEN = {
    ("task", "image-classification"): LM_ONLY,
    ("task", "causal-lm"): VISION_ONLY,
    ("logger", "csv"): WANDB + MLFLOW + TENSORBOARD + [f"{PKG}/tracking/background.py", f"{PKG}/tracking/tables.py"],
    ("logger", "wandb"): MLFLOW + TENSORBOARD,
    ("logger", "mlflow"): WANDB + TENSORBOARD,
    ("logger", "tensorboard"): WANDB + MLFLOW + [f"{PKG}/tracking/background.py"],
    ("license", "none"): ["LICENSE"],
    ("env_manager", "conda"): [".python-version"],
    ("env_manager", "pip"): ["environment.yml", ".python-version"],
    ("env_manager", "uv"): ["environment.yml"],
    ("powershell", "no"): [
        "setup.cmd",
        "scripts/setup.ps1",
        "scripts/setup_checks.py",
        "scripts/tasks.ps1",
        "scripts/conda_profile.py",
        ".github/workflows/windows-setup.yml",
        "docs/windows.md",
        "docs/windows.ko.md",
    ],
    ("ci", "none"): [".github"],
}


def paths_to_remove(answers: dict) -> list[str]:
    """Every path the table removes for ``answers``, in table order."""
    removed: list[str] = []
    for (key, value), paths in REMOVE_WHEN.items():
        if answers.get(key) == value:
            removed.extend(paths)
    return removed


def remove(root: Path, relative: str) -> None:
    path = root / relative
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
        if path.parent != root and not any(path.parent.iterdir()):
            path.parent.rmdir()  # a folder left empty (docs/ without the Windows pages) goes too


def rendered_by_cruft(answers: dict) -> bool:
    """True when cruft renders: its context carries the template commit as ``_commit``."""
    return "_commit" in answers


def git_init(root: Path) -> None:
    if (root / ".git").exists():
        return
    try:
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        sys.stderr.write(f"git init skipped ({error}); run it yourself in {root}.\n")


def next_steps(answers: dict) -> str:
    slug, package = answers["project_slug"], answers["package_name"]
    run = "uv run " if answers["env_manager"] == "uv" else ""
    windows = answers.get("powershell") == "yes"
    where = "Linux, macOS: " if windows else ""
    if answers["env_manager"] == "conda":
        setup = (f"conda env create -f environment.yml && conda activate {slug}", f"{where}or bash scripts/setup.sh")
    elif answers["env_manager"] == "uv":
        setup = ("uv sync", f"{where}writes uv.lock: commit it (or: bash scripts/setup.sh)")
    else:
        setup = ("python -m venv .venv && . .venv/bin/activate && pip install -e '.[dev]'",
                 f"{where}or bash scripts/setup.sh")
    git = [("git init && git add -A && git commit -m 'Create from project_template'",
            "under cruft the hook runs no git")
           ] if answers.get("git_init") == "yes" and rendered_by_cruft(answers) else []
    # Windows first: setup.cmd works under the default execution policy, where .\scripts\setup.ps1 is refused.
    first = [(".\\setup.cmd", "Windows: in PowerShell or cmd, or double-click it (-WhatIf: a dry run)")
             ] if windows else []
    commands = [
        (f"cd {slug}", ""),
        *git,
        *first,
        setup,
        (f"{run}python -m {package}.train", "trains offline in seconds"),
        (f"{run}python -m {package}.train debug=fast", "one quick epoch"),
        (f'{run}pytest -m "not slow"', "the project's quick tests; plain pytest runs them all (minutes)"),
    ]
    width = max(len(command) for command, comment in commands if comment and len(command) < 60)
    lines = [f"  {command:<{width}}   # {comment}" if comment else f"  {command}" for command, comment in commands]
    return "\n".join([f"Created {slug}/. Next steps:", *lines, ""])


def main() -> int:
    root = Path.cwd()
    for relative in paths_to_remove(ANSWERS):
        remove(root, relative)
    if ANSWERS.get("git_init") == "yes" and not rendered_by_cruft(ANSWERS):
        git_init(root)
    sys.stdout.write(next_steps(ANSWERS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
