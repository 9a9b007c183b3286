"""Shared helpers: compose configs in-process and run the training entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

import {{ cookiecutter.package_name }}.config.resolvers  # noqa: F401 - registers ${run_time:} and the others
from {{ cookiecutter.package_name }}.config.quoting import path_override

import warm

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "configs"
PACKAGE = "{{ cookiecutter.package_name }}"
# torchrun's rendezvous needs libuv, which PyTorch's Windows wheels are built without (pytorch#139990):
# the tests that start torchrun skip on Windows, where multi-process training needs WSL.
needs_torchrun = pytest.mark.skipif(
    sys.platform == "win32",
    reason="torchrun does not start on Windows (PyTorch's wheels lack libuv, pytorch#139990): needs Linux or WSL",
)


def compose_config(
    overrides: list[str] | None = None, output_dir: Path | None = None, config_name: str = "train"
) -> DictConfig:
    """Compose a config as the entry point would, with a resolvable ``paths.output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides or [], return_hydra_config=True)
    if output_dir is not None:
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


# torchrun with 2 CPU processes on this machine (gloo): the start of a command line
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def offline_env() -> dict[str, str]:
    """The environment for subprocess runs: offline, no W&B key, the package importable."""
    env = {key: value for key, value in os.environ.items() if key != "WANDB_API_KEY"}
    paths = env.get("PYTHONPATH", "")
    env.update(
        WANDB_MODE="offline",
        HF_HUB_OFFLINE="1",
        WANDB_SILENT="true",
        # src first, once (the autouse fixture below sets this environment, and tests call it again)
        PYTHONPATH=os.pathsep.join(dict.fromkeys([str(PROJECT_ROOT / "src"), *filter(None, paths.split(os.pathsep))])),
    )
    return env


def run_module(
    module: str, *overrides: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``python -m <package>.<module> overrides...`` from the project root (see :func:`run_command`)."""
    return run_command([sys.executable, "-m", f"{PACKAGE}.{module}", *overrides], env=env, timeout=timeout)


def run_command(
    command: list[str], env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``command`` from the project root in the offline environment, its output captured as text; a
    ``python -m`` command skips re-importing torch and the other heavy libraries where it can (``tests/warm.py``)."""
    return warm.run(command, PROJECT_ROOT, env or offline_env(), timeout)


def train_on_two_ranks(run: Path, *overrides: str) -> Path:
    """Train under torchrun on 2 gloo ranks into the run folder ``run`` (one epoch, CSV logger)."""
    command = [
        *TORCHRUN,
        "-m",
        f"{PACKAGE}.train",
        "trainer=ddp",
        "logger=csv",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
        *overrides,
        path_override("hydra.run.dir", run),
    ]
    result = run_command(command)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def evaluated_alone(run: Path, split: str) -> dict[str, float]:
    """The metrics ``evaluate`` computes for ``split`` of ``run`` (its loader and pass), in this process: one
    process, no process group, and no interpreter start per split."""
    from {{ cookiecutter.package_name }}.evaluate import evaluate_split
    from {{ cookiecutter.package_name }}.inference.run_folder import load_run

    evaluation = evaluate_split(load_run(run, [], "best"), split)
    return {f"{split}/{key}": float(value) for key, value in evaluation.compute().items()}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` where no CUDA device is visible."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in offline_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One quick training run with the default config, shared by the tests that inspect it."""
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    result = run_module("train", "debug=fast", "trainer.device=cpu", path_override("hydra.run.dir", run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sft_tiny run (about a minute), shared by the chat tests and the DPO tests that start from it."""
    run_dir = tmp_path_factory.mktemp("sft") / "run"
    result = run_module(
        "train", "experiment=sft_tiny", "logger=csv", "trainer.device=cpu", path_override("hydra.run.dir", run_dir)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def resolved(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)
