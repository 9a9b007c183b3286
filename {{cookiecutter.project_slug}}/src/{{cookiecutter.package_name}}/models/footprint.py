"""Weight memory of a causal LM: estimates per precision/quantization, what is resident, the fit."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

MODES = ("fp32", "fp16", "bf16", "8bit", "4bit")
BLOCK = 64  # bitsandbytes 4-bit block size
NESTED_BLOCK = 256  # double quantization: one float32 scale per 256 blocks
GB = 1e9


def _meta_model(config: Any) -> nn.Module:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def quantizable(name: str, module: nn.Module, skip: set[str]) -> bool:
    """bitsandbytes replaces every Linear except the output head (and tied embeddings)."""
    return isinstance(module, nn.Linear) and name.split(".")[-1] not in skip


def estimate_bytes(config: Any, double_quant: bool = True, unquantized_bytes: int = 2) -> tuple[int, dict[str, int]]:
    """Parameter count and estimated weight bytes per mode for a transformers config.

    Quantized modes keep the parameters that are not quantized (embeddings, norms, the output
    head) at ``unquantized_bytes`` each: 2 as a 16-bit ``dtype`` loads them (QLoRA training keeps them so),
    4 in fp32.
    """
    model = _meta_model(config)
    params = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in params.values())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    skip = {"lm_head"}
    quantized_weights = quantized_rows = quantized_layers = 0
    for name, module in model.named_modules():
        if quantizable(name, module, skip) and id(module.weight) in params:
            quantized_weights += module.weight.numel()
            quantized_rows += module.out_features
            quantized_layers += 1
    rest = total - quantized_weights
    blocks = -(-quantized_weights // BLOCK)
    scales = (
        blocks + 4 * -(-blocks // NESTED_BLOCK) + quantized_layers * 4 * (16 + 256)
        if double_quant
        else 4 * blocks + quantized_layers * 4 * 16
    )
    estimates = {
        "fp32": 4 * total + buffers,
        "fp16": 2 * total + buffers,
        "bf16": 2 * total + buffers,
        "8bit": quantized_weights + 4 * quantized_rows + unquantized_bytes * rest + buffers,
        "4bit": quantized_weights // 2 + scales + unquantized_bytes * rest + buffers,
    }
    return total, estimates


def _quant_state_tensors(parameter: torch.Tensor) -> list[torch.Tensor]:
    tensors = []
    state = getattr(parameter, "quant_state", None)
    while state is not None:
        tensors += [t for t in (getattr(state, "absmax", None), getattr(state, "code", None)) if t is not None]
        state = getattr(state, "state2", None)
    scb = getattr(parameter, "SCB", None)
    if isinstance(scb, torch.Tensor):
        tensors.append(scb)
    return tensors


def resident_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of weights really held, per device; offloaded (meta) tensors count nothing.

    Unlike ``get_memory_footprint()``, meta tensors are skipped, and quantization
    scales (absmax, SCB) are included.
    """
    seen: set[int] = set()
    per_device: dict[str, int] = {}
    tensors = [*model.parameters(), *model.buffers()]
    for tensor in list(tensors):
        tensors += _quant_state_tensors(tensor)
    for tensor in tensors:
        if id(tensor) in seen or tensor.device.type == "meta":
            continue
        seen.add(id(tensor))
        key = str(tensor.device)
        per_device[key] = per_device.get(key, 0) + tensor.numel() * tensor.element_size()
    return per_device


def free_bytes(device: str) -> int | None:
    """Free memory on ``device`` (a CUDA GPU, else the host's available RAM); None if unknown."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def fit_advice(estimates: dict[str, int], mode: str, free: int | None) -> str:
    """One line: does ``mode`` fit in ``free`` bytes, and if not, which mode would."""
    if free is None:
        return f"needs about {estimates[mode] / GB:.2f} GB in {mode}; free memory unknown."
    if estimates[mode] <= free:
        return f"fits: needs about {estimates[mode] / GB:.2f} GB in {mode}, {free / GB:.2f} GB free."
    head = f"needs {estimates[mode] / GB:.2f} GB in {mode}, {free / GB:.2f} GB free"
    for option, override in (("bf16", "precision=bf16"), ("8bit", "quantization=8bit"), ("4bit", "quantization=4bit")):
        if estimates[option] < estimates[mode] and estimates[option] <= free:
            return f"{head}: {override} needs about {estimates[option] / GB:.2f} GB."
    return (
        f"{head}: even 4bit needs {estimates['4bit'] / GB:.2f} GB; use a smaller model, or spill layers to the "
        "CPU with a model.device_map dict naming them (they stay unquantized there; auto keeps them 4-bit)."
    )


def _free_without(model_bytes: int, free: int | None) -> int | None:
    """Free memory as if the model were not loaded: the estimate counts the model, so the free figure must not."""
    return None if free is None else free + model_bytes


def unquantized_bytes(precision: str) -> int:
    """Bytes per parameter that stays unquantized: 4 in fp32, else 2 (also for QLoRA training, which casts
    nothing: ``hf_loader.freeze_quantized_base``)."""
    return 4 if precision == "fp32" else 2


def build_report(
    model: nn.Module, name: str, precision: str, quantization: str, double_quant: bool = True
) -> dict[str, Any]:
    """The memory report (the keys of memory.json) for a loaded model."""
    parameters, estimates = estimate_bytes(model.config, double_quant, unquantized_bytes(precision))
    resident = resident_bytes(model)
    device_map = getattr(model, "hf_device_map", None) or {"": next(iter(resident), "cpu")}
    mode = quantization if quantization != "none" else precision
    target = next((d for d in resident if d.startswith("cuda")), "cpu")
    return {
        "model": name,
        "parameters": parameters,
        "estimated_bytes": estimates,
        "loaded": {
            "precision": precision,
            "quantization": quantization,
            "bytes": sum(resident.values()),
            "bytes_by_device": resident,
            "device_map": {str(k): str(v) for k, v in device_map.items()},
        },
        "fit": fit_advice(estimates, mode, _free_without(resident.get(target, 0), free_bytes(target))),
    }


def log_report(report: dict[str, Any]) -> None:
    """Log the report as a small table."""
    loaded = report["loaded"]
    lines = [
        f"Memory of {report['model']} ({report['parameters'] / 1e6:.1f}M parameters):",
        f"  {'mode':<6} {'estimated MB':>13}",
    ]
    lines += [f"  {mode:<6} {value / 1e6:>13.1f}" for mode, value in report["estimated_bytes"].items()]
    lines.append(
        f"  loaded {loaded['precision']}/{loaded['quantization']}: {loaded['bytes'] / 1e6:.1f} MB "
        f"resident {loaded['bytes_by_device']}"
    )
    lines.append(f"  {report['fit']}")
    log.info("\n".join(lines))


# ----------------------------------------------------------------- full fine-tuning: DDP against FSDP
WORLD_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)


def block_parameters(config: Any) -> int:
    """Parameters of the largest transformer block (what FSDP gathers at once), found as training/fsdp.py
    finds them: the classes a Hugging Face model names in ``_no_split_modules``."""
    model = _meta_model(config)
    names = set(getattr(model, "_no_split_modules", None) or [])
    blocks = [module for module in model.modules() if type(module).__name__ in names]
    return max((sum(p.numel() for p in block.parameters()) for block in blocks), default=0)


def training_bytes(parameters: int, block: int, world: int, strategy: str, compute_bytes: int = 2) -> dict[str, int]:
    """Per-rank bytes of a full fine-tune with AdamW (fp32 weights and gradients, two fp32 moments),
    activations not counted. ``strategy``: ``ddp`` (a full copy per rank), ``fsdp`` (1/world of each, plus
    two blocks gathered in ``compute_bytes`` for compute and prefetch), ``fsdp_offload`` (the shards on
    the CPU: the GPU holds the gathered blocks only; ``cpu`` is this rank's host memory)."""
    share = 1 if strategy == "ddp" else world
    shard = {
        "parameters": 4 * parameters // share,
        "gradients": 4 * parameters // share,
        "optimizer": 8 * parameters // share,
    }
    gathered = 0 if strategy == "ddp" else 2 * block * compute_bytes
    if strategy == "fsdp_offload":
        return {
            "parameters": 0,
            "gradients": 0,
            "optimizer": 0,
            "gathered": gathered,
            "gpu": gathered,
            "cpu": sum(shard.values()),
        }
    return {**shard, "gathered": gathered, "gpu": sum(shard.values()) + gathered, "cpu": 0}


def gpus_needed(parameters: int, block: int, gpu_gib: float, compute_bytes: int = 2) -> dict[str, int | None]:
    """The fewest GPUs of ``gpu_gib`` GiB (85% usable: activations, allocator, CUDA context) that hold the
    weights, gradients and optimizer state, per strategy; None: not even 128 (DDP: not one, since every
    rank holds a full copy)."""
    usable = 0.85 * gpu_gib * 2**30
    return {
        strategy: next(
            (
                world
                for world in (WORLD_SIZES[:1] if strategy == "ddp" else WORLD_SIZES)
                if training_bytes(parameters, block, world, strategy, compute_bytes)["gpu"] <= usable
            ),
            None,
        )
        for strategy in ("ddp", "fsdp", "fsdp_offload")
    }


def training_report(config: Any, gpu_gib: float, compute_bytes: int = 2) -> dict[str, Any]:
    """What ``memory`` adds for a full fine-tune: per-rank bytes on 1 to 8 ranks and the GPUs needed."""
    parameters = sum(p.numel() for p in {id(p): p for p in _meta_model(config).parameters()}.values())
    block = block_parameters(config)
    return {
        "gpu_gib": gpu_gib,
        "per_rank_bytes": {
            strategy: {
                str(world): training_bytes(parameters, block, world, strategy, compute_bytes) for world in (1, 2, 4, 8)
            }
            for strategy in ("ddp", "fsdp", "fsdp_offload")
        },
        "gpus_needed": gpus_needed(parameters, block, gpu_gib, compute_bytes),
    }


def log_training_report(report: dict[str, Any]) -> None:
    """Log the full fine-tuning table: GB per rank on 1/2/4/8 ranks and the GPUs needed."""
    lines = [
        "Full fine-tune with AdamW, GB per rank (weights, gradients, optimizer; activations not counted):",
        f"  {'ranks':<18}" + "".join(f"{world:>9}" for world in (1, 2, 4, 8)),
    ]
    labels = {"ddp": "ddp GPU", "fsdp": "fsdp GPU", "fsdp_offload": "fsdp+offload CPU"}
    for strategy, by_world in report["per_rank_bytes"].items():
        key = "cpu" if strategy == "fsdp_offload" else "gpu"
        lines.append(f"  {labels[strategy]:<18}" + "".join(f"{by_world[str(w)][key] / GB:>9.1f}" for w in (1, 2, 4, 8)))
    needed, host = report["gpus_needed"], report["per_rank_bytes"]["fsdp_offload"]["1"]["cpu"] / GB
    lines.append(
        f"  GPUs of {report['gpu_gib']} GiB needed: ddp {needed['ddp'] or 'none (a full copy never fits)'}, "
        f"fsdp {needed['fsdp'] or 'more than 128'}, fsdp+offload {needed['fsdp_offload'] or 'more than 128'} "
        f"(with {host:.0f} GB of host memory in all)"
    )
    log.info("\n".join(lines))
