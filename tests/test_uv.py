"""env_manager=uv: pyproject.toml's dependency groups and PyTorch indexes, setup.sh's uv mode, and (slow) a real
``uv sync`` that trains with this machine's PyTorch."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib
from cookiecutter.main import cookiecutter
from test_setup_scripts import BIN, tool

from conftest import TEMPLATE_DIR

UV_RENDER = {"env_manager": "uv", "logger": "csv", "powershell": "no", "ci": "none"}
# The PyTorch family: gigabytes on Linux (CUDA libraries), so the end-to-end test reuses this interpreter's copy.
TORCH_FAMILY = re.compile(r"(torch|torchvision|triton|nvidia-.+|cuda-.+)")
CPU_SOURCE = {"index": "pytorch-cpu"}
# uv's environment variables that would change what the end-to-end test checks (the cache and indexes may stay).
UV_SETTINGS_UNDER_TEST = {"UV_PROJECT_ENVIRONMENT", "UV_PYTHON", "UV_NO_SYNC", "UV_FROZEN", "UV_LOCKED", "UV_NO_DEV",
                          "UV_SYSTEM_PYTHON", "UV_OFFLINE"}


def pyproject(project: Path) -> dict:
    return tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))


def test_uv_render_declares_dev_as_a_dependency_group(render) -> None:
    uv = pyproject(render(**UV_RENDER))
    pip = pyproject(render(env_manager="pip"))
    assert uv["dependency-groups"]["dev"] == pip["project"]["optional-dependencies"]["dev"]
    assert "dev" not in uv["project"].get("optional-dependencies", {})
    assert "dependency-groups" not in pip and "uv" not in pip.get("tool", {})


def test_uv_render_offers_pytorch_indexes_that_only_serve_what_is_routed_to_them(render) -> None:
    for task, routed in (("image-classification", {"torch", "torchvision"}), ("causal-lm", {"torch"})):
        project = render(**{**UV_RENDER, "task": task})
        text = (project / "pyproject.toml").read_text(encoding="utf-8")
        indexes = {index["name"]: index for index in pyproject(project)["tool"]["uv"]["index"]}
        assert {"pytorch-cpu", "pytorch-cu126"} <= set(indexes)
        assert all(index["explicit"] is True and index["url"].startswith("https://download.pytorch.org/whl/")
                   for index in indexes.values())
        assert pyproject(project)["tool"]["uv"]["sources"] == {}, "PyPI's build is the default"
        # The documented switch: uncommenting the example lines routes the torch family to the CPU index.
        switched = tomllib.loads(re.sub(r"(?m)^# (torch\w* = )", r"\1", text))["tool"]["uv"]["sources"]
        assert switched == {name: [CPU_SOURCE] for name in routed}


def test_uv_render_has_no_conda_file_and_runs_through_uv(render) -> None:
    project = render(**{**UV_RENDER, "powershell": "yes"})
    package = next(path.name for path in (project / "src").iterdir() if path.name != "hydra_plugins")
    assert not (project / "environment.yml").exists()
    assert (project / ".python-version").read_text(encoding="utf-8").strip() == "3.11"
    assert re.search(r"(?m)^PYTHON \?= uv run python$", (project / "Makefile").read_text(encoding="utf-8"))
    assert "& uv run python @Arguments" in (project / "scripts" / "tasks.ps1").read_text(encoding="utf-8")
    readme = (project / "README.md").read_text(encoding="utf-8")
    for command in ("uv sync", f"uv run python -m {package}.train", "uv run pytest", "commit `uv.lock`",
                    "[tool.uv.sources]"):
        assert command in readme, command
    assert "environment.yml" not in readme and '.[dev]' not in readme


def test_next_steps_say_uv_sync_and_uv_run(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    cookiecutter(str(TEMPLATE_DIR), no_input=True, output_dir=str(tmp_path), extra_context={"env_manager": "uv"})
    out = capfd.readouterr().out
    assert "uv sync" in out and "uv run python -m my_experiment.train" in out and "uv run pytest" in out
    assert "pip install" not in out and "conda" not in out


FAKE_UV = """#!/usr/bin/env bash
# Records each call; `run ... python ARGS` runs the real Python.
echo "$*" >> "$FAKE_UV_LOG"
if [ "$1" = --version ]; then
    echo "uv 0.0.0 (fake)"
elif [ "$1" = run ]; then
    while [ "$1" != python ]; do shift; done
    shift
    exec "$REAL_PYTHON" "$@"
fi
"""


def fake_uv_env(project: Path, tmp_path: Path) -> dict[str, str]:
    uv = tmp_path / "uv"
    uv.write_text(FAKE_UV, encoding="utf-8")
    uv.chmod(0o755)
    return {**os.environ, "UV": str(uv), "FAKE_UV_LOG": str(tmp_path / "calls.log"), "REAL_PYTHON": sys.executable,
            "PYTHONPATH": str(project / "src")}


def test_setup_sh_uv_mode_syncs_and_cpu_switches_the_torch_index(render, tmp_path: Path) -> None:
    project = shutil.copytree(render(**UV_RENDER), tmp_path / "project")
    package = next(path.name for path in (project / "src").iterdir() if path.name != "hydra_plugins")
    env = fake_uv_env(project, tmp_path)
    first = subprocess.run(["bash", "scripts/setup.sh"], cwd=project, env=env, capture_output=True, text=True,
                           timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "uv.lock" in first.stdout and "torch " in first.stdout and "uv run" in first.stdout
    assert pyproject(project)["tool"]["uv"]["sources"] == {}

    for _ in range(2):  # the switch is made once; a rerun changes nothing
        cpu = subprocess.run(["bash", "scripts/setup.sh", "--cpu", "--", "--compile-bytecode"], cwd=project, env=env,
                             capture_output=True, text=True, timeout=120)
        assert cpu.returncode == 0, cpu.stdout + cpu.stderr
        sources = pyproject(project)["tool"]["uv"]["sources"]
        assert sources == {"torch": [CPU_SOURCE], "torchvision": [CPU_SOURCE]}
    calls = (tmp_path / "calls.log").read_text(encoding="utf-8").splitlines()
    assert calls.count("sync") == 1 and calls.count("sync --compile-bytecode") == 2
    assert f"run --no-sync python -c import {package}" in calls


def test_setup_sh_uv_mode_without_uv_says_what_to_do(render, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=render(**UV_RENDER), env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "uv not found" in result.stderr and "--pip" in result.stderr


def share_distributions(names: list[str], folder: Path) -> list[str]:
    """Symlink into ``folder`` the top-level files of those ``names`` this interpreter has; return the names found."""
    folder.mkdir()
    found = []
    for name in names:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
        for top in {Path(file).parts[0] for file in dist.files or []} - {".."}:
            source, link = Path(dist.locate_file(top)), folder / top
            if source.exists() and not link.exists():
                link.symlink_to(source)
    return found


def locked_names(project: Path) -> list[str]:
    lock = tomllib.loads((project / "uv.lock").read_text(encoding="utf-8"))
    return sorted(package["name"] for package in lock["package"])


@pytest.mark.slow
def test_setup_sh_uv_syncs_and_trains_with_the_local_torch(render, tmp_path: Path) -> None:
    """setup.sh in uv mode from nothing: uv sync writes uv.lock and .venv, `make smoke` trains through uv run.

    PyPI's Linux torch brings gigabytes of CUDA libraries; this test installs none of them. uv locks them as
    usual, skips installing the PyTorch family (--no-install-package), and the .venv sees this interpreter's
    copy through a .pth file. Everything else uv downloads (or takes from its cache) and installs.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    rendered = render(**{**UV_RENDER, "python_version": version})
    project = shutil.copytree(rendered, tmp_path / "project")
    package = next(path.name for path in (project / "src").iterdir() if path.name != "hydra_plugins")
    uv = tool("uv")
    uv_bin = tmp_path / "bin"  # uv on PATH (as after its installer), without this interpreter's other tools
    uv_bin.mkdir()
    (uv_bin / "uv").symlink_to(uv)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("VIRTUAL_ENV", "CONDA")) and key not in UV_SETTINGS_UNDER_TEST}
    env.update(UV=uv, PYTHON=sys.executable, UV_PYTHON_DOWNLOADS="never", OMP_NUM_THREADS="1")
    env["PATH"] = os.pathsep.join([str(uv_bin), *(p for p in env["PATH"].split(os.pathsep) if Path(p) != BIN)])

    started = time.perf_counter()
    probe = shutil.copytree(rendered, tmp_path / "probe")  # learn the locked names without touching the project
    locked = subprocess.run([uv, "lock", "--python", sys.executable], cwd=probe, env=env, capture_output=True,
                            text=True, timeout=600)
    assert locked.returncode == 0, locked.stderr[-3000:]
    skipped = [name for name in locked_names(probe) if TORCH_FAMILY.fullmatch(name)]
    assert "torch" in skipped
    shared = share_distributions(skipped, tmp_path / "local-torch")
    assert {"torch", "torchvision"} <= set(shared)
    made = subprocess.run([uv, "venv", "--python", sys.executable, str(project / ".venv")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    site = next((project / ".venv").glob("lib/python*/site-packages"))
    (site / "_local_torch.pth").write_text(f"{tmp_path / 'local-torch'}\n", encoding="utf-8")

    skip_args = [arg for name in skipped for arg in ("--no-install-package", name)]
    first = subprocess.run(["bash", "scripts/setup.sh", "--", *skip_args], cwd=project, env=env,
                           capture_output=True, text=True, timeout=900)
    first_s = time.perf_counter() - started
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "no uv.lock yet" in first.stdout and "torch " in first.stdout and f"-m {package}.train" in first.stdout
    assert locked_names(project) == locked_names(probe)

    where = subprocess.run([uv, "run", "--no-sync", "python", "-c",
                            f"import json, hydra, sklearn, torch, {package} as p; "
                            "print(json.dumps([m.__file__ for m in (hydra, sklearn, torch, p)]))"],
                           cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert where.returncode == 0, where.stderr[-3000:]
    hydra_file, sklearn_file, torch_file, package_file = map(Path, json.loads(where.stdout))
    assert hydra_file.is_relative_to(site) and sklearn_file.is_relative_to(site), "uv installed these"
    assert torch_file.is_relative_to(tmp_path / "local-torch"), "the local torch, not a download"
    assert package_file.is_relative_to(project / "src"), "the project is installed editable"

    lock_before = (project / "uv.lock").read_bytes()
    started = time.perf_counter()
    second = subprocess.run(["bash", "scripts/setup.sh", "--", *skip_args], cwd=project, env=env,
                            capture_output=True, text=True, timeout=600)
    second_s = time.perf_counter() - started
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "no uv.lock yet" not in second.stdout and (project / "uv.lock").read_bytes() == lock_before

    # The Makefile runs through `uv run` (PYTHON, which setup.sh reads, would override that); UV_NO_SYNC keeps
    # `uv run` from installing the skipped PyTorch family.
    make_env = {key: value for key, value in env.items() if key != "PYTHON"}
    smoke = subprocess.run(["make", "smoke"], cwd=project, capture_output=True, text=True, timeout=600,
                           env={**make_env, "UV_NO_SYNC": "1", "HF_HUB_OFFLINE": "1"})
    assert smoke.returncode == 0, smoke.stdout[-2000:] + smoke.stderr[-3000:]
    assert "uv run python -m" in smoke.stdout
    assert (project / "outputs" / "smoke" / "metrics.csv").is_file()
    sys.stderr.write(f"setup.sh --uv end to end: first run {first_s:.0f}s, rerun {second_s:.0f}s\n")
