"""Helpers shared by the benchmark scripts: render the template, time things side by side."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cookiecutter.main import cookiecutter

TEMPLATE_DIR = Path(__file__).resolve().parents[1]


def render(**answers: str) -> Path:
    """Render the template into a fresh temp folder and make its package importable."""
    output = Path(tempfile.mkdtemp(prefix="bench-render-"))
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


def report(name: str, value: float, goal: str) -> None:
    """The last line of every benchmark: ``name=value (goal)``."""
    print(f"{name}={value:.3f} ({goal})")
