"""Helpers shared by the benchmark scripts: render the template, time things side by side."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cookiecutter.main import cookiecutter

TEMPLATE_DIR = Path(__file__).resolve().parents[1]


def render(into: Path | None = None, **answers: str) -> Path:
    """Render the template into ``into`` (default: a fresh temp folder) and make its package importable."""
    output = into or Path(tempfile.mkdtemp(prefix="bench-render-"))
    project = Path(cookiecutter(str(TEMPLATE_DIR), no_input=True, extra_context=answers, output_dir=str(output)))
    sys.path.insert(0, str(project / "src"))
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return project


def timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def interleaved(candidates: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Run each candidate ``repeats`` times, alternating, and return the median of what each returns."""
    results: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            results[name].append(run())
    return {name: statistics.median(values) for name, values in results.items()}


def paired_ratios(candidate: Callable[[], float], baseline: Callable[[], float], repeats: int,
                  warmup: int = 0) -> list[float]:
    """``candidate() / baseline()`` measured back to back ``repeats`` times, who goes first alternating,
    after ``warmup`` pairs whose ratios are dropped (a process's first runs pay for its start-up).

    Each ratio compares two runs made seconds apart, so a slow spell of a shared machine shifts both
    sides of a pair rather than one side of the comparison; the median of the ratios is the figure.
    """
    for _ in range(warmup):
        candidate(), baseline()
    ratios = []
    for repeat in range(repeats):
        if repeat % 2:
            base = baseline()
            ratios.append(candidate() / base)
        else:
            ratios.append(candidate() / baseline())
    return ratios


def offline_env(threads: int = 1) -> dict[str, str]:
    """This environment without a W&B key, offline, with ``threads`` torch threads per process."""
    env = {key: value for key, value in os.environ.items() if key != "WANDB_API_KEY"}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    return env


def child_result(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> dict:
    """Run a measuring child process and return the JSON it prints on its ``RESULT `` line."""
    result = subprocess.run(command, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed:\n{result.stderr[-3000:]}")
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def report(name: str, value: float, goal: str) -> None:
    """The last line of every benchmark: ``name=value (goal)``."""
    print(f"{name}={value:.3f} ({goal})")
