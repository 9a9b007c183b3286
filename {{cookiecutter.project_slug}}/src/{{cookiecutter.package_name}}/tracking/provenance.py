"""What made a run's numbers: command, code, package versions, hardware, precision, seed, times.

One record, written to ``provenance.json`` in every run folder (``git.diff`` beside it when
the code had uncommitted changes), given to every logger as part of the config, and printed for the
current machine by ``python -m {{ cookiecutter.package_name }}.doctor``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from {{ cookiecutter.package_name }} import runtime

# Distributions whose versions explain a result, by the name they are reported under.
PACKAGES = {
    "{{ cookiecutter.project_slug }}": "{{ cookiecutter.project_slug }}",
    "torch": "torch",
    "torchvision": "torchvision",
{%- if cookiecutter.task != "image-classification" %}
    "transformers": "transformers",
    "bitsandbytes": "bitsandbytes",
    "peft": "peft",
    "accelerate": "accelerate",
{%- endif %}
    "timm": "timm",
    "hydra": "hydra-core",
    "omegaconf": "omegaconf",
{%- if cookiecutter.logger in ("wandb", "mlflow", "tensorboard") %}
    "{{ cookiecutter.logger }}": "{{ cookiecutter.logger }}",
{%- endif %}
    "numpy": "numpy",
}
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")
CODE_DIR = Path(__file__).resolve().parent


def now() -> str:
    """The current time in UTC, ISO 8601."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _git(*args: str, cwd: Path) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def git_state(cwd: Path = CODE_DIR) -> dict[str, Any]:
    """The commit of the checkout holding ``cwd``, whether it has uncommitted changes, and the diff.

    Outside a git checkout (e.g. an installed package) every value is None.
    """
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if not commit:
        return {"commit": None, "dirty": None, "diff": None}
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd) or ""
    diff = _git("diff", "HEAD", cwd=cwd) if status.strip() else None
    return {"commit": commit.strip(), "dirty": bool(status.strip()), "diff": diff}


def versions() -> dict[str, str | None]:
    """Python, CUDA/cuDNN as torch sees them, and each installed package of :data:`PACKAGES`."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name, distribution in PACKAGES.items():
        try:
            found[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    found["cuda"] = torch.version.cuda
    found["cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    return found


def cpu_model() -> str:
    """The CPU's marketing name where the OS tells it, else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="ignore").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The instruction-set flags of :data:`CPU_FLAGS` this CPU reports (Linux; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="ignore")
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [flag for flag in CPU_FLAGS if flag in flags]


def gpus() -> list[dict[str, Any]]:
    """Name, memory and bf16 support of every visible CUDA GPU."""
    if not torch.cuda.is_available():
        return []
    found = []
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        found.append(
            {
                "name": properties.name,
                "memory_gb": round(properties.total_memory / 2**30, 1),
                "capability": f"{properties.major}.{properties.minor}",
                "bf16": runtime.bf16_supported(torch.device("cuda", index)),
            }
        )
    return found


def hardware() -> dict[str, Any]:
    """CPU model and the flags that matter for bf16, core count, GPUs, and the platform."""
    mps = getattr(torch.backends, "mps", None)
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_native_bf16": runtime.cpu_has_native_bf16(),
        "cpu_count": os.cpu_count(),
        "gpus": gpus(),
        "mps": bool(mps is not None and mps.is_available()),
    }


def launch() -> dict[str, Any]:
    """How many processes trained together and how: world size, DDP backend, SLURM job id and restarts."""
    group = torch.distributed if torch.distributed.is_available() and torch.distributed.is_initialized() else None
    job = runtime.slurm_job_id()
    return {
        "world_size": runtime.world_size(),
        "backend": group.get_backend() if group else None,
        "slurm_job_id": job,
        "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")) if job else None,
    }


def precision_record(requested: str, resolved: str, device: torch.device) -> dict[str, Any]:
    """The precision asked for, the one used on ``device``, and why they differ (None when they do not)."""
    fallback = runtime.hardware_fallback(requested, device) if requested != resolved else None
    return {
        "requested": requested,
        "resolved": resolved,
        "device": str(device),
        "fallback": fallback[1] if fallback else None,
    }


def entry_point() -> str:
    """How this process was started: ``python -m <module>``, or the script's name."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return f"python -m {spec.name}" if spec is not None else Path(sys.argv[0]).name


def collect(
    overrides: list[str] | None = None,
    seed: int | None = None,
    precision: dict[str, Any] | None = None,
    code_dir: Path = CODE_DIR,
) -> dict[str, Any]:
    """The full record; ``git.diff`` is kept for :func:`write` and left out of what the loggers receive."""
    return {
        "command": {
            "entry": entry_point(),
            "argv": sys.argv[1:],
            "overrides": list(overrides or []),
            "cwd": str(Path.cwd()),
        },
        "git": git_state(code_dir),
        "versions": versions(),
        "hardware": hardware(),
        "launch": launch(),
        "precision": precision,
        "seed": seed,
        "started_at": now(),
        "ended_at": None,
    }


def public(record: dict[str, Any]) -> dict[str, Any]:
    """The record without the diff text (for provenance.json and the loggers' config)."""
    return {**record, "git": {key: value for key, value in record["git"].items() if key != "diff"}}


def write(run_dir: Path, record: dict[str, Any]) -> Path:
    """Write ``provenance.json`` (and ``git.diff`` when the code was dirty) into ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    diff = record["git"].get("diff")
    if diff:
        (run_dir / "git.diff").write_text(diff, encoding="utf-8")
    path = run_dir / "provenance.json"
    path.write_text(json.dumps(public(record), indent=2, default=str) + "\n", encoding="utf-8")
    return path


def finish(run_dir: Path, record: dict[str, Any], status: str) -> None:
    """Stamp the end time and how the run ended (``completed``, ``interrupted``, ``failed``), and rewrite."""
    record["ended_at"], record["status"] = now(), status
    write(run_dir, record)
