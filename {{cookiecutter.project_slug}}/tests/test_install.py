"""The package outside its checkout: configs shipped inside it, user config folders, console scripts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from {{ cookiecutter.package_name }}.config.quoting import path_override

from conftest import PACKAGE, PROJECT_ROOT, offline_env, run_module

SLUG = "{{ cookiecutter.project_slug }}"
ENV_VAR = "{{ cookiecutter.package_name | upper }}_CONFIG_PATH"
REQUIRES_PYTHON = "{{ cookiecutter.python_version }}"  # pyproject.toml's requires-python lower bound


def user_configs(folder: Path) -> Path:
    """A folder of the user's own configs holding ``experiment/mine.yaml``."""
    (folder / "experiment").mkdir(parents=True)
    (folder / "experiment" / "mine.yaml").write_text("# @package _global_\nseed: 4242\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize("how", ["environment", "command line"])
def test_user_config_folder_joins_the_search_path(tmp_path: Path, how: str) -> None:
    folder = user_configs(tmp_path / "mine")
    env = offline_env()
    extra: list[str] = []
    if how == "environment":
        env[ENV_VAR] = str(folder)
    else:
        extra = [path_override("hydra.searchpath", [f"file://{folder.as_posix()}"])]
    result = run_module("train", "experiment=mine", *extra, "--cfg", "job", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert yaml.safe_load(result.stdout)["seed"] == 4242


def test_without_the_folder_the_experiment_is_unknown(tmp_path: Path) -> None:
    result = run_module("train", "experiment=mine", "--cfg", "job")
    assert result.returncode != 0 and "mine" in result.stderr


def console(venv: Path, name: str) -> str:
    folder = venv / ("Scripts" if os.name == "nt" else "bin")
    return str(folder / f"{SLUG}-{name}")


@pytest.mark.slow
@pytest.mark.skipif(
    sys.version_info < tuple(map(int, REQUIRES_PYTHON.split("."))),
    reason=f"pip refuses to install this project (requires-python >={REQUIRES_PYTHON}) into Python "
    f"{sys.version_info.major}.{sys.version_info.minor}: run the tests with Python {REQUIRES_PYTHON} or newer",
)
def test_non_editable_install_trains_evaluates_and_predicts_from_anywhere(tmp_path: Path) -> None:
    """``pip install .`` into a fresh venv (which sees this environment's packages through a .pth file),
    then the console scripts run from an unrelated folder, with no PYTHONPATH and no checkout around."""
    source = tmp_path / "source"
    shutil.copytree(
        PROJECT_ROOT,
        source,
        ignore=shutil.ignore_patterns(
            "outputs", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info", "build", ".venv"
        ),
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    shared = [path for path in sys.path if Path(path).name in {"site-packages", "dist-packages"}]
    Path(purelib, "test_environment.pth").write_text("\n".join(shared) + "\n", encoding="utf-8")
    env = {key: value for key, value in offline_env().items() if key != "PYTHONPATH"}
    install = subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--ignore-installed",
            "--no-index",
            "--quiet",
            str(source),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]
    shutil.rmtree(source)  # nothing may read the checkout from here on

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*command: str) -> subprocess.CompletedProcess:
        result = subprocess.run(list(command), cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    where = run(python, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)").stdout.strip()
    assert Path(where).is_relative_to(venv)
    run_dir = elsewhere / "outputs" / "run"
    run(console(venv, "train"), "debug=fast", "trainer.max_steps=2", path_override("hydra.run.dir", run_dir))
    sources = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["config_sources"]
    assert {"path": f"{PACKAGE}.configs", "provider": "main", "schema": "pkg"} in sources
    assert (run_dir / "provenance.json").is_file() and (run_dir / "checkpoints" / "best.pt").is_file()

    run(console(venv, "evaluate"), path_override("run", run_dir), path_override("output", elsewhere / "eval"))
    evaluated = json.loads((elsewhere / "eval" / "eval.json").read_text())["metrics"]
    assert evaluated == pytest.approx(json.loads((run_dir / "summary.json").read_text())["test"], abs=1e-6)

    config = (run_dir / ".hydra" / "config.yaml").read_text()
    if "classification" in config:
        from PIL import Image

        Image.new("RGB", (16, 16), (200, 30, 30)).save(elsewhere / "picture.png")
        run(
            console(venv, "predict"),
            path_override("run", run_dir),
            path_override("input", elsewhere / "picture.png"),
            path_override("output", elsewhere / "predicted"),
        )
        assert (elsewhere / "predicted" / "predictions.csv").read_text().count("\n") == 2
    else:
        (elsewhere / "prompts.txt").write_text("One plus one is\n", encoding="utf-8")
        run(
            console(venv, "predict"),
            path_override("run", run_dir),
            path_override("input", elsewhere / "prompts.txt"),
            "max_new_tokens=4",
            path_override("output", elsewhere / "predicted"),
        )
        assert (elsewhere / "predicted" / "generations.jsonl").is_file()
    assert "GPU?" in run(console(venv, "doctor")).stdout
    sweeper = f"hydra_plugins.{PACKAGE}_optuna.optuna_sweeper.OptunaSweeper"  # hparams_search=optuna finds it
    run(
        python,
        "-c",
        f"from hydra.core.plugins import Plugins; assert {sweeper!r} in Plugins.instance().class_name_to_class",
    )
    run(console(venv, "compare"), str(run_dir))
    assert "</html>" in (run_dir / "comparison.html").read_text(encoding="utf-8")
