"""requirements-dev.lock: exact versions of requirements-dev.txt, installed by `make setup`; torch is TORCH_SPEC's."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import TEMPLATE_DIR

REQUIREMENTS = TEMPLATE_DIR / "requirements-dev.txt"
LOCK = TEMPLATE_DIR / "requirements-dev.lock"
# The Pythons the template offers (cookiecutter.json's python_version), on Linux.
PYTHONS = ["3.10", "3.11", "3.12"]
# What TORCH_SPEC installs: the lock must not name it, or it would fight a CPU or CUDA build.
TORCH_BUILD = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")


def linux(python: str) -> dict[str, str]:
    return {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split(" #")[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def human_requirements() -> list[Requirement]:
    return [Requirement(line) for line in requirement_lines(REQUIREMENTS)]


def lock_entries() -> list[Requirement]:
    return [Requirement(line) for line in requirement_lines(LOCK)]


def pinned_for(python: str) -> dict[str, str]:
    """name -> the version the lock installs on Linux with ``python``; a name locked twice fails."""
    pins: dict[str, str] = {}
    for entry in lock_entries():
        if entry.marker is None or entry.marker.evaluate(linux(python)):
            name = canonicalize_name(entry.name)
            assert name not in pins, f"{name} is locked twice for Python {python}"
            pins[name] = str(entry.specifier).removeprefix("==")
    return pins


def direct_requirements_of_lock() -> set[str]:
    """Names the lock says came from requirements-dev.txt (uv's `# via -r requirements-dev.txt` notes)."""
    names, current = set(), None
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith((" ", "#")):
            current = canonicalize_name(Requirement(line).name)
        elif current and line.strip().lstrip("#").strip() in ("-r requirements-dev.txt", "via -r requirements-dev.txt"):
            names.add(current)
    return names


def test_every_lock_entry_is_an_exact_pin() -> None:
    entries = lock_entries()
    assert entries, "requirements-dev.lock is empty: run make lock"
    loose = [str(entry) for entry in entries if not re.fullmatch(r"==[^,*]+", str(entry.specifier))]
    assert not loose, f"not pinned with ==: {loose}"


@pytest.mark.parametrize("python", PYTHONS)
def test_lock_pins_every_requirement_within_its_bounds(python: str) -> None:
    """Each line of requirements-dev.txt has one exact pin for this Python that its bounds allow."""
    pins = pinned_for(python)
    for requirement in human_requirements():
        if requirement.marker is not None and not requirement.marker.evaluate(linux(python)):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is missing from requirements-dev.lock (Python {python}): run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"the lock pins {name}=={pins[name]}, outside {requirement} (Python {python}): run make lock")


def test_lock_follows_the_list_people_edit() -> None:
    """A requirement removed from requirements-dev.txt is gone from the lock's direct requirements too."""
    listed = {canonicalize_name(requirement.name) for requirement in human_requirements()}
    assert direct_requirements_of_lock() == listed, "requirements-dev.lock is stale: run make lock"


def test_lock_leaves_the_pytorch_build_to_torch_spec() -> None:
    named = sorted(entry.name for entry in lock_entries() if TORCH_BUILD.match(canonicalize_name(entry.name)))
    assert not named, f"the lock names {named}; TORCH_SPEC installs them (make lock leaves them out)"


def make_dry_run(*args: str) -> str:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    result = subprocess.run([make, "--dry-run", "--always-make", *args], cwd=TEMPLATE_DIR, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_setup_installs_torch_spec_then_the_lock(tmp_path: Path) -> None:
    commands = make_dry_run("setup", f"VENV={tmp_path / 'venv'}", "TORCH_SPEC=torch==9.9 torchvision==9.9").splitlines()
    installs = [line for line in commands if "pip install" in line]
    assert len(installs) == 2, commands
    assert installs[0].endswith("pip install --quiet torch==9.9 torchvision==9.9"), installs
    assert "-r requirements-dev.lock -c" in installs[1] and "requirements-dev.txt" not in installs[1], installs
    assert any(line.endswith("pip check") for line in commands), commands


def test_make_test_latest_installs_the_unlocked_list_in_its_own_venv(tmp_path: Path) -> None:
    latest = tmp_path / "latest"
    commands = make_dry_run("test-latest", f"LATEST_VENV={latest}")
    assert f"-r requirements-dev.txt -c {latest}/torch-constraints.txt" in commands
    assert f"{latest}/bin/python -m pytest tests" in commands and "requirements-dev.lock" not in commands


def test_make_lock_resolves_for_every_python_and_leaves_torch_out() -> None:
    commands = make_dry_run("lock", "VENV=.venv")
    compiles = [line for line in commands.splitlines() if "uv pip compile requirements-dev.txt" in line]
    assert len(compiles) == 2 and all("--universal" in line for line in compiles), commands
    assert f"--python-version {PYTHONS[0]}" in compiles[0]
    assert "--no-emit-package" in compiles[1] and "--output-file requirements-dev.lock" in commands


def test_this_environment_is_the_lock() -> None:
    """In a venv made by `make setup`, every package of the lock is installed at the lock's version."""
    if not (Path(sys.prefix) / ".installed").is_file():
        pytest.skip(f"{sys.prefix} was not made by make setup")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    pins = pinned_for(python)
    installed = {canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}
    wrong = {name: (version, installed.get(name)) for name, version in pins.items() if installed.get(name) != version}
    assert not wrong, f"installed versions differ from requirements-dev.lock (lock, installed): {wrong}"


@pytest.mark.parametrize("env_manager", ["conda", "pip"])
def test_rendered_project_keeps_lower_bounds_and_says_how_to_record_its_set(render, env_manager: str) -> None:
    """A render asks for compatible releases (>= only) and its README shows how to write down the exact set."""
    project = render(env_manager=env_manager, task="both", quantization="none")
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    dependencies = pyproject["dependencies"] + [dep for group in pyproject["optional-dependencies"].values()
                                                for dep in group]
    not_lower_bounds = [dep for dep in dependencies
                        if any(spec.operator != ">=" for spec in Requirement(dep).specifier)]
    assert not not_lower_bounds, f"pyproject.toml pins or caps {not_lower_bounds}: keep >= lower bounds"
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert "pip freeze --exclude-editable > requirements.lock" in readme
    assert ("conda env export" in readme) == (env_manager == "conda")
