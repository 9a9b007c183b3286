"""What this machine offers a run, in one screen: ``python -m {{ cookiecutter.package_name }}.doctor``.

Answers "why is my GPU not used" and "why is bf16 off", and what the model loaders and
loggers say of themselves (whether 8-/4-bit loading can work, whether you are logged in to
W&B), with the same facts a run records in ``provenance.json``; starts no run.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys
from typing import Any

import torch

from {{ cookiecutter.package_name }} import runtime
from {{ cookiecutter.package_name }}.errors import asked_for_help
from {{ cookiecutter.package_name }}.tracking import provenance

log = logging.getLogger(__name__)


def gpu_answer() -> str:
    """Which device training picks, and why not a GPU when it is not one."""
    device = runtime.choose_device("auto")
    if device.type == "cuda":
        names = ", ".join(f"{gpu['name']} ({gpu['memory_gb']} GB)" for gpu in provenance.gpus())
        return f"training uses {device}: {names}"
    if torch.version.cuda is None:
        why = (
            "this PyTorch is a CPU-only build: install a CUDA build "
            "(bash scripts/setup.sh, or pip install torch --index-url https://download.pytorch.org/whl/cu126)"
        )
    elif os.environ.get("CUDA_VISIBLE_DEVICES", None) in {"", "-1"}:
        why = "CUDA_VISIBLE_DEVICES hides every GPU: unset it"
    else:
        why = (
            f"PyTorch is built for CUDA {torch.version.cuda} but finds no GPU: check `nvidia-smi` "
            "(driver installed and new enough for this CUDA?)"
        )
    return f"training uses {device}, not a GPU: {why}"


def bf16_answer() -> str:
    """Whether precision=bf16 runs as asked on the device training picks, or what it falls back to."""
    device = runtime.choose_device("auto")
    fallback = runtime.hardware_fallback("bf16", device)
    if fallback is None:
        native = " (native AVX512-BF16/AMX)" if device.type == "cpu" else ""
        return f"precision=bf16 runs as bf16 on {device}{native}"
    return f"precision=bf16 becomes {fallback[0]} on {device}: {fallback[1]}"


def compile_answer() -> str:
    """Whether trainer.compile=true compiles here (a small step compiled and run), or why it trains eager."""
    from {{ cookiecutter.package_name }}.training import compiling

    return compiling.doctor_answer()[1]


def part_answers() -> dict[str, str]:
    """What the modules of ``models`` and ``tracking`` say about themselves (each ``doctor_answer()``)."""
    from {{ cookiecutter.package_name }} import models, tracking

    answers = {}
    for package in (models, tracking):
        for module in pkgutil.iter_modules(package.__path__):
            try:
                answer = getattr(importlib.import_module(f"{package.__name__}.{module.name}"), "doctor_answer", None)
            except ImportError as error:
                answers[f"{module.name}?"] = f"does not import ({error})"
                continue
            if answer is not None:
                question, text = answer()
                answers[question] = text
    return answers


def report() -> dict[str, Any]:
    """The facts and the answers, as a dictionary."""
    return {
        "versions": provenance.versions(),
        "hardware": provenance.hardware(),
        "git": {key: value for key, value in provenance.git_state().items() if key != "diff"},
        "answers": {"GPU?": gpu_answer(), "bf16?": bf16_answer(), **part_answers(), "compile?": compile_answer()},
    }


def format_report(facts: dict[str, Any]) -> str:
    """One screen of text."""
    versions = ", ".join(f"{name} {version}" for name, version in facts["versions"].items() if version)
    hardware = facts["hardware"]
    gpus = (
        "; ".join(
            f"{gpu['name']} {gpu['memory_gb']} GB (bf16 {'yes' if gpu['bf16'] else 'no'})" for gpu in hardware["gpus"]
        )
        or "none visible"
    )
    git = facts["git"]
    code = (
        "not a git checkout" if git["commit"] is None else f"{git['commit'][:12]}{' (dirty)' if git['dirty'] else ''}"
    )
    lines = [
        f"versions      {versions}",
        f"platform      {hardware['platform']}",
        f"cpu           {hardware['cpu']} x{hardware['cpu_count']}; flags: {' '.join(hardware['cpu_flags']) or '-'}",
        f"gpus          {gpus}",
        f"code          {code}",
        "",
        *(f"{question:<14}{answer}" for question, answer in facts["answers"].items()),
    ]
    return "\n".join(lines)


def main() -> None:
    """Print the report for this machine."""
    if asked_for_help(sys.argv[1:], __doc__ or ""):
        return
    if sys.argv[1:]:
        sys.stderr.write(
            f"doctor takes no options (got {' '.join(sys.argv[1:])}): run `python -m {{ cookiecutter.package_name }}.doctor` alone.\n"
        )
        raise SystemExit(1)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    log.info("%s", format_report(report()))


if __name__ == "__main__":
    main()
