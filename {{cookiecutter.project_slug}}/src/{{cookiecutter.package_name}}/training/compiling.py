"""``trainer.compile``: torch.compile as one switch (false, true, or a mapping of its options).

- Regional: a Hugging Face transformer compiles each of its blocks (the classes its
  ``_no_split_modules`` names, e.g. ``LlamaDecoderLayer``); identical blocks share one compiled
  graph, so compile time does not grow with depth. Other models compile whole.
- In place (``module.compile()``): parameter names and ``state_dict`` keys do not change (no
  ``_orig_mod.``), so checkpoints move freely between compiled and eager runs. Sharding per block
  (FSDP2's ``fully_shard``) composes with it: compile the blocks first, then shard the same modules.
- Only the training step compiles: validation and test run eager (:func:`eager`), so a run pays
  one compile, not a second one for the no-grad graphs.
- Shapes: a new batch size or sequence length compiles once more, then torch marks that dimension
  dynamic and one graph serves every size (``dynamic: true`` starts there; its first compile is longer).
- Compiled code is cached in :func:`cache_dir` (a stable folder, not the temp folder), so the next
  run of the same model loads it instead of compiling again.
- A machine where compile cannot work (no C++ compiler, an unknown backend) gets one warning that
  names the fix and trains eager; with ``fullgraph: true`` asked, one line, and the run stops.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from {{ cookiecutter.package_name }}.errors import UserError, closest, did_you_mean

log = logging.getLogger(__name__)

OPTIONS = ("mode", "dynamic", "fullgraph", "backend")
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
COMPILER_FIX = (
    "install a C++ compiler (Windows: Visual Studio Build Tools with 'Desktop development with C++', run from "
    "its x64 Native Tools prompt; Linux: sudo apt install g++; macOS: xcode-select --install)"
)


def compile_options(setting: Any) -> dict[str, Any] | None:
    """``trainer.compile`` as torch.compile's keyword arguments; None when compile is off."""
    if setting is None or setting is False:
        return None
    if setting is True:
        return {}
    if not isinstance(setting, Mapping):
        raise UserError(
            f"trainer.compile={setting} is not accepted: use false, true or a mapping such as "
            "trainer.compile={mode:max-autotune}."
        )
    unknown = [key for key in setting if key not in OPTIONS]
    if unknown:
        hint = did_you_mean(str(unknown[0]), OPTIONS).strip()
        raise UserError(
            f"trainer.compile.{unknown[0]} is not a torch.compile option:{' ' + hint if hint else ''} "
            f"trainer.compile takes {', '.join(OPTIONS)}."
        )
    return {key: value for key, value in setting.items() if value is not None}


def cache_dir() -> Path:
    """Where compiled code is kept between runs: ``$TORCHINDUCTOR_CACHE_DIR`` if set, else a folder of the
    user cache (``~/.cache/{{ cookiecutter.package_name }}/torch_compile``; on Windows under ``%LOCALAPPDATA%``)."""
    given = os.environ.get(CACHE_ENV)
    torch_default = given and Path(given).parent == Path(tempfile.gettempdir())  # torch writes its default there
    if given and not (torch_default and Path(given).name.startswith("torchinductor_")):
        return Path(given)
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        root = Path(os.environ["LOCALAPPDATA"])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "{{ cookiecutter.package_name }}" / "torch_compile"


def blocks(model: nn.Module) -> list[nn.Module]:
    """The outermost modules whose class a Hugging Face model lists in ``_no_split_modules`` (its blocks)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if type(module).__name__ in names and not any(name.startswith(f"{outer}.") for outer in found):
            found[name] = module
    return list(found.values())


def _probe_step(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(x @ x.T).sum()


@functools.lru_cache(maxsize=8)
def _probe(device: str, backend: str, mode: str | None, dynamic: bool | None) -> str | None:
    from torch._dynamo import list_backends

    if backend not in list_backends(exclude_tags=()):
        near = closest(backend, list_backends()) or ["inductor"]
        return f"{backend!r} is not a torch.compile backend: use trainer.compile.backend={' or '.join(near)}"
    compiled = torch.compile(_probe_step, backend=backend, mode=mode, dynamic=dynamic, fullgraph=True)
    x = torch.linspace(-1, 1, 32, device=device).reshape(4, 8).requires_grad_()  # no draw from the run's RNG
    quiet = [logging.getLogger(name) for name in ("torch._inductor", "torch._dynamo")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:  # their warnings about a failure are the cause in the one line below
        logger.setLevel(logging.CRITICAL + 1)
    try:
        compiled(x).backward()
    except Exception as error:  # noqa: BLE001 - whatever fails here is the answer
        return _cause(error)
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    return None


def _cause(error: BaseException) -> str:
    """One line from a compile failure: what is missing, and the fix."""
    chain, seen = [], error
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " ".join(f"{type(item).__name__}: {item}" for item in chain)
    if any(word in text for word in ("CxxCompiler", "CppCompileError", "C++ compiler", "cl is not found")):
        return f"no working C++ compiler for the inductor backend: {COMPILER_FIX}"
    first = (str(error).strip().splitlines() or [""])[0][:200]
    return f"torch.compile failed on a small test ({type(error).__name__}: {first})"


def works(device: torch.device | str, options: Mapping[str, Any] | None = None) -> str | None:
    """None when torch.compile with ``options`` compiles and runs a small step on ``device``, else why not."""
    options = options or {}
    os.environ[CACHE_ENV] = str(cache_dir())
    return _probe(str(device), str(options.get("backend", "inductor")), options.get("mode"), options.get("dynamic"))


def compile_model(model: nn.Module, setting: Any, device: torch.device) -> bool:
    """Compile ``model`` in place as ``trainer.compile`` asks; return whether it is compiled.

    Call it before wrapping (DDP) or sharding (FSDP2's ``fully_shard`` on the same blocks).
    """
    options = compile_options(setting)
    if options is None:
        return False
    problem = works(device, options)
    if problem is not None:
        if options.get("fullgraph"):
            raise UserError(f"trainer.compile with fullgraph=true cannot work here: {problem}, or drop fullgraph.")
        log.warning(
            "trainer.compile is off for this run: %s, or set trainer.compile=false. Training runs eager.", problem
        )
        return False
    if device.type == "cpu":
        # random ops (dropout) draw from torch's generator as eager does: compiled and eager runs, and a
        # run resumed across the two, follow the same random stream
        from torch._inductor import config as inductor_config

        inductor_config.fallback_random = True
    regions = blocks(model) or [model]
    for region in regions:
        region.compile(**options)
    whole = regions[0] is model
    what = "the model compiled whole" if whole else f"{len(regions)} {type(regions[0]).__name__} blocks compiled"
    log.info(
        "torch.compile: %s, in place; the first training step compiles (on a CPU from seconds to minutes, "
        "cached in %s for the next run); validation runs eager.",
        what,
        os.environ[CACHE_ENV],
    )
    return True


@contextlib.contextmanager
def eager(compiled: bool = True) -> Iterator[None]:
    """Run compiled modules eagerly inside the block (validation and test); nothing changes when not ``compiled``."""
    if not compiled:
        yield
        return
    if hasattr(torch.compiler, "set_stance"):  # torch 2.6+
        with torch.compiler.set_stance("force_eager"):
            yield
    else:
        from torch._dynamo import config as dynamo_config

        with dynamo_config.patch(disable=True):
            yield


def doctor_answer() -> tuple[str, str]:
    """For ``doctor``: whether trainer.compile=true works on this machine's training device."""
    from {{ cookiecutter.package_name }} import runtime

    device = runtime.choose_device("auto")
    problem = works(device)
    if problem is None:
        return "compile?", f"trainer.compile=true works on {device} (inductor; compiled code cached in {cache_dir()})"
    return "compile?", f"trainer.compile=true trains eager here: {problem}"
