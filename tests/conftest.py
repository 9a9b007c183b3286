"""Render fixtures for the template's tests: each set of answers is rendered once per session."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter

TEMPLATE_DIR = Path(__file__).resolve().parents[1]
DEFAULTS = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text(encoding="utf-8"))


def default_answers() -> dict[str, str]:
    """The first value of every choice, as ``--no-input`` picks them (Jinja-computed defaults excluded)."""
    return {key: value[0] if isinstance(value, list) else value
            for key, value in DEFAULTS.items() if not key.startswith("_") and "{" not in str(value)}


class Renderer:
    """Renders the template into a session temp folder, caching by answers."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.cache: dict[str, Path] = {}

    def __call__(self, **answers: str) -> Path:
        key = json.dumps(answers, sort_keys=True)
        if key not in self.cache:
            output = self.base / f"render{len(self.cache)}"
            output.mkdir()
            self.cache[key] = Path(cookiecutter(str(TEMPLATE_DIR), no_input=True, extra_context=answers,
                                                output_dir=str(output)))
        return self.cache[key]


_renderer: Renderer | None = None


def session_renderer(base: Path | None = None) -> Renderer:
    """The one renderer of this process; tests that list renders' contents at collection share it."""
    global _renderer
    if _renderer is None:
        if base is None:
            base = Path(tempfile.mkdtemp(prefix="template-renders-"))
            atexit.register(shutil.rmtree, base, ignore_errors=True)
        _renderer = Renderer(base)
    return _renderer


@pytest.fixture(scope="session")
def render(tmp_path_factory: pytest.TempPathFactory) -> Renderer:
    return _renderer or session_renderer(tmp_path_factory.mktemp("renders"))


MYPY_CACHE = "TEMPLATE_MYPY_CACHE"


def mypy_cache() -> Path:
    """One mypy cache for every render of the session, its xdist workers included (mypy replaces cache files
    atomically): torch's and the other libraries' types are read once per Python version (about a minute of
    CPU), each render's own package in seconds. The process that made it removes it at the end."""
    if MYPY_CACHE not in os.environ:
        os.environ[MYPY_CACHE] = tempfile.mkdtemp(prefix="template-mypy-")
        atexit.register(shutil.rmtree, os.environ[MYPY_CACHE], ignore_errors=True)
    return Path(os.environ[MYPY_CACHE])


def pytest_configure(config: pytest.Config) -> None:
    mypy_cache()  # before xdist starts its workers, which inherit the environment


def project_env(project: Path) -> dict[str, str]:
    """An offline environment in which a rendered project's package imports from ``src``."""
    env = {key: value for key, value in os.environ.items() if key != "WANDB_API_KEY"}
    env.update(WANDB_MODE="offline", HF_HUB_OFFLINE="1", WANDB_SILENT="true", PYTHONPATH=str(project / "src"),
               OMP_NUM_THREADS="1", MYPY_CACHE_DIR=str(mypy_cache()))
    return env


def run_in(project: Path, *args: str, timeout: float = 900, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess:
    """Run ``python args...`` in a rendered project with this interpreter."""
    return subprocess.run([sys.executable, *args], cwd=project, env=env or project_env(project),
                          capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------ a one-node SLURM (make test-slurm)
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slurm", action="store_true", help="run the tests marked slurm on a one-node SLURM "
                     "started for the session (installs Debian's packages when missing and root)")


# The render suites take minutes each. xdist hands a worker its first tests in one batch (2 with make test's
# --maxschedchunk 1), and a worker runs its batch in order: two suites in one batch would run one after the
# other while the other workers idle at the end. So the suites come first, longest first, each followed by
# one ordinary test, and every worker starts one suite.
RENDER_SUITES_LONGEST_FIRST = ("both-8bit", "lm-4bit", "default", "vision-csv-fp32")


def render_suite(item: pytest.Item) -> str | None:
    if getattr(item, "originalname", "") != "test_rendered_project_tests_pass":
        return None
    return item.callspec.params.get("case")  # type: ignore[attr-defined]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    order = {name: rank for rank, name in enumerate(RENDER_SUITES_LONGEST_FIRST)}
    suites = sorted((item for item in items if render_suite(item)), key=lambda item: order.get(render_suite(item), -1))
    others = [item for item in items if not render_suite(item)]
    items[:] = [*(item for suite, other in zip(suites, others, strict=False) for item in (suite, other)),
                *suites[len(others):], *others[len(suites):]]
    if config.getoption("--slurm"):
        return
    skip = pytest.mark.skip(reason="needs a one-node SLURM: run `make test-slurm` (or pytest --slurm)")
    for item in items:
        if "slurm" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """munged, slurmctld and slurmd, started once and stopped by PID at the end, whatever happens."""
    from slurm_cluster import Cluster, install_packages

    why_not = install_packages()
    if why_not:
        pytest.skip(why_not)
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp")))
    atexit.register(cluster.stop)  # also when the session is interrupted
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
