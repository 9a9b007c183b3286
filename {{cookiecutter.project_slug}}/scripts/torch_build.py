"""Pick the PyTorch CUDA build for this PC's NVIDIA GPUs, and check that the installed build runs on them.

The setup scripts call it; it uses the standard library only (``probe`` imports torch), so any
Python 3.8+ runs it:

    python scripts/torch_build.py index                      # asks nvidia-smi; prints cu128, cu126 or none
    python scripts/torch_build.py index --compute-cap 12.0   # the same for a given GPU, without nvidia-smi
    python scripts/torch_build.py probe                      # with the environment's python: one op per GPU

``index`` prints the build on its first line and one line per warning after it. ``probe`` prints the
PyTorch build and each GPU, and exits 1 with the command that installs a build that runs there when a
GPU is visible but cannot run PyTorch's kernels ("no kernel image is available").
"""

from __future__ import annotations

import argparse
import logging
import platform
import shutil
import subprocess
import sys

INDEX_URL = "https://download.pytorch.org/whl/{build}"
# The GPU architectures each CUDA build of PyTorch's Windows and Linux x86 wheels has kernels for
# (PyTorch's RELEASE.md, "PyTorch CUDA Support Matrix", releases 2.9 to 2.12). A kernel built for
# sm_XY runs on every GPU of the same major version X with minor version Y or higher.
BUILDS = {
    "cu128": ((7, 5), (8, 0), (8, 6), (9, 0), (10, 0), (12, 0)),
    "cu126": ((5, 0), (6, 0), (7, 0), (7, 5), (8, 0), (8, 6), (9, 0)),
}
# Newest first: cu128 is the first with RTX 50-series (sm_120) kernels; cu126 still runs Maxwell to Volta.
PREFERRED = ("cu128", "cu126")
log = logging.getLogger("torch_build")
FALLBACK = "cu126"  # a driver too old to report the compute capability is too old for cu128 as well
QUERY = ["--query-gpu=compute_cap,name", "--format=csv,noheader"]


def parse_capability(text: str) -> tuple[int, int]:
    """``"12.0"`` as ``(12, 0)``."""
    major, _, minor = text.strip().partition(".")
    return int(major), int(minor or 0)


def runs_on(build: str, capability: tuple[int, int]) -> bool:
    """Whether ``build`` has kernels for a GPU of ``capability``."""
    major, minor = capability
    return any(arch_major == major and arch_minor <= minor for arch_major, arch_minor in BUILDS[build])


def choose_build(gpus: list[tuple[tuple[int, int], str]]) -> tuple[str, list[str]]:
    """(build, warnings) for GPUs given as (compute capability, name): the newest build that runs on all of
    them, else the one that runs on most (the others are named)."""
    for build in PREFERRED:
        if all(runs_on(build, capability) for capability, _ in gpus):
            return build, []
    best = max(PREFERRED, key=lambda build: sum(runs_on(build, capability) for capability, _ in gpus))
    left_out = [f"{name} (sm_{major}{minor})" for (major, minor), name in gpus if not runs_on(best, (major, minor))]
    return best, [f"no PyTorch CUDA build runs on all GPUs here; the {best} build leaves out {', '.join(left_out)}"]


def query_gpus(nvidia_smi: str) -> tuple[list[tuple[tuple[int, int], str]] | None, str]:
    """The GPUs nvidia-smi lists as (compute capability, name), or (None, why not)."""
    try:
        result = subprocess.run([nvidia_smi, *QUERY], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"nvidia-smi did not run ({error})"
    if result.returncode != 0:
        reason = (result.stdout + result.stderr).strip().splitlines()
        return None, f"nvidia-smi cannot report the compute capability ({reason[0] if reason else result.returncode})"
    gpus = []
    for line in result.stdout.splitlines():
        capability, _, name = line.partition(",")
        try:
            gpus.append((parse_capability(capability), name.strip() or "an NVIDIA GPU"))
        except ValueError:
            return None, f"nvidia-smi printed {line.strip()!r} for the compute capability"
    return gpus, ""


def index(capabilities: list[str], nvidia_smi: str | None) -> list[str]:
    """The lines ``index`` prints: the build (``none`` without an NVIDIA GPU), then warnings."""
    if capabilities:
        gpus = [(parse_capability(text), f"GPU {number}") for number, text in enumerate(capabilities)]
    else:
        nvidia_smi = nvidia_smi or shutil.which("nvidia-smi")
        if not nvidia_smi:
            return ["none"]
        gpus, why = query_gpus(nvidia_smi)
        if gpus is None:
            return [FALLBACK, f"{why}: installing the {FALLBACK} build; for an RTX 50-series GPU update the driver"]
    if not gpus:
        return ["none"]
    build, warnings = choose_build(gpus)
    return [build, *warnings]


def install_command(build: str) -> str:
    return f"pip install --force-reinstall torch torchvision --index-url {INDEX_URL.format(build=build)}"


def probe() -> int:
    """Print the PyTorch build and run one operation on each GPU; 1 if a visible GPU cannot run it."""
    import torch

    log.info(f"python {platform.python_version()}, torch {torch.__version__}")
    if not torch.cuda.is_available():
        mps = getattr(torch.backends, "mps", None)
        log.info(
            "CUDA: no; Apple MPS: yes"
            if mps is not None and mps.is_available()
            else "CUDA: no (training runs on the CPU)"
        )
        return 0
    failed = 0
    for number in range(torch.cuda.device_count()):
        device = f"cuda:{number}"
        name = torch.cuda.get_device_name(number)
        major, minor = torch.cuda.get_device_capability(number)
        try:
            (torch.ones(8, device=device) * 2).sum().item()  # one kernel: what is_available() does not check
        except RuntimeError as error:
            failed += 1
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            build, _ = choose_build([((major, minor), name)])
            log.error(
                f"{name} (sm_{major}{minor}) cannot run this PyTorch ({torch.__version__}, CUDA {torch.version.cuda}, "
                f"kernels for {' '.join(torch.cuda.get_arch_list()) or 'none'}): {first}. "
                f"Install the {build} build: {install_command(build)}"
            )
            continue
        log.info(f"CUDA {torch.version.cuda}: {name} (sm_{major}{minor}) runs PyTorch")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    choose = commands.add_parser("index", help="the CUDA build for this PC's NVIDIA GPUs")
    choose.add_argument("--compute-cap", action="append", default=[], help="e.g. 12.0 (default: ask nvidia-smi)")
    choose.add_argument("--nvidia-smi", help="the nvidia-smi to ask (default: the one on PATH)")
    commands.add_parser("probe", help="run one operation on each GPU with the installed PyTorch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if args.command == "probe":
        return probe()
    sys.stdout.write("\n".join(index(args.compute_cap, args.nvidia_smi)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
