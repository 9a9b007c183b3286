"""FSDP2 (``trainer=fsdp``): shard each transformer block, then the root, over all ranks.

Every rank keeps 1/world of the parameters, gradients and optimizer state; a block's full
weights exist only while it runs (``reshard_after_forward``). The precision becomes FSDP's
``MixedPrecisionPolicy`` (bf16/fp16 parameters in compute, fp32 gradient reduction);
``cpu_offload`` keeps the shards and the optimizer step on the CPU. In one process (no process
group) the model is not sharded, but the checkpoints are still sharded ones (DCP), so that a run
resumes on any number of ranks.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from {{ cookiecutter.package_name }} import runtime
from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.training import distributed as dist

log = logging.getLogger(__name__)


@dataclass
class Sharding:
    """The options of ``trainer.fsdp`` (configs/trainer/fsdp.yaml)."""

    blocks: str | None = None
    reshard_after_forward: bool = True
    cpu_offload: bool = False
    activation_checkpointing: bool = False
    async_save: bool = False

    def shard(self, model: nn.Module, device: torch.device, precision: str) -> nn.Module:
        """``model`` with every block and then the root under ``fully_shard`` (in place)."""
        reason = runtime.unshardable_reason(model)  # its builder knows (e.g. packed low-bit weights)
        if reason:
            raise UserError(reason)
        blocks = find_blocks(model, self.blocks)
        if self.activation_checkpointing:
            for block in blocks:
                checkpoint_activations(block)
        if not torch_dist.is_initialized():
            log.info("FSDP in one process: the model is not sharded; checkpoints are sharded (DCP) all the same.")
            return model
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

        broadcast_from_rank0(model)
        mesh = init_device_mesh(device.type, (runtime.world_size(),))
        offload = CPUOffloadPolicy(pin_memory=device.type == "cuda") if self.cpu_offload else OffloadPolicy()
        options = {"mesh": mesh, "mp_policy": mixed_precision(precision), "offload_policy": offload}
        for block in blocks:
            fully_shard(block, reshard_after_forward=self.reshard_after_forward, **options)
        fully_shard(model, **options)  # the root: embeddings, final norm, head; stays gathered after forward
        held, total = sum(local_bytes(model.parameters())), sum(full_bytes(model.parameters()))
        log.info(
            "FSDP: %d blocks and the root sharded over %d ranks%s; this rank holds %d of %d parameter bytes.",
            len(blocks),
            runtime.world_size(),
            " (offloaded to the CPU)" if self.cpu_offload else "",
            held,
            total,
        )
        return model


def mixed_precision(precision: str) -> Any:
    """bf16/fp16: parameters cast for compute, gradients reduced in fp32; fp32: nothing cast."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if precision == "fp32":
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=runtime.DTYPES[precision], reduce_dtype=torch.float32)


def find_blocks(model: nn.Module, path: str | None = None) -> list[nn.Module]:
    """The modules to shard one by one: ``path`` (a dotted name of a module list, e.g. ``model.layers``),
    else the model's transformer blocks (a Hugging Face model's ``_no_split_modules``: its decoder layers),
    else the children of its largest ``nn.ModuleList``; none: the root alone."""
    bare = runtime.unwrap(model)
    if path:
        candidates = [bare, getattr(bare, "get_base_model", lambda: bare)()]
        for root in candidates:
            try:
                found = operator.attrgetter(path)(root)
            except AttributeError:
                continue
            return list(found) if isinstance(found, (nn.ModuleList, nn.Sequential)) else [found]
        lists = [name for name, module in bare.named_modules() if isinstance(module, nn.ModuleList)]
        raise UserError(
            f"trainer.fsdp.blocks={path} names no module of this model: use one of {lists[:5] or ['null']}."
        )
    base = bare.get_base_model() if hasattr(bare, "get_base_model") else bare  # type: ignore[operator]  # an adapter wrapper's
    names = set(getattr(base, "_no_split_modules", None) or [])
    blocks = [module for module in bare.modules() if type(module).__name__ in names]
    if blocks:
        return blocks
    lists = [module for module in bare.modules() if isinstance(module, nn.ModuleList) and len(module)]
    if lists:
        largest: nn.Module = max(lists, key=lambda module: sum(p.numel() for p in module.parameters()))
        return list(largest.children())
    return []


def checkpoint_activations(block: nn.Module) -> None:
    """Recompute ``block``'s activations in the backward pass instead of keeping them."""
    forward = block.forward

    def recomputed(*args: Any, **kwargs: Any) -> Any:
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    block.forward = recomputed


def local_bytes(tensors: Iterable[torch.Tensor]) -> list[int]:
    """The bytes this rank stores of each tensor (its shard of a DTensor)."""
    held = []
    for tensor in tensors:
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        held.append(local.numel() * local.element_size())
    return held


def full_bytes(tensors: Iterable[torch.Tensor]) -> list[int]:
    """The bytes of each whole tensor (all shards of a DTensor)."""
    return [tensor.numel() * tensor.element_size() for tensor in tensors]


def broadcast_from_rank0(model: nn.Module) -> None:
    """Give every rank rank 0's weights before sharding (each rank keeps only its shard, so ranks seeded
    differently would otherwise train a patchwork). A frozen base loaded from files is the same everywhere
    and is skipped, as under DDP."""
    from_files = getattr(runtime.unwrap(model), runtime.FROZEN_FROM_FILES, False)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad or not from_files:
                torch_dist.broadcast(parameter.data, src=0)
        for buffer in model.buffers():
            torch_dist.broadcast(buffer, src=0)


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def match_forward_passes(model: nn.Module, task: Any, batch: Any, done: int, device: torch.device) -> None:
    """Evaluation under FSDP: every forward gathers the shards of all ranks, so a rank with fewer batches
    repeats its last one (its loss thrown away) as often as the rank with most batches has more."""
    if not is_sharded(model) or batch is None:
        return
    for _ in range(dist.max_over_ranks(done, device) - done):
        task.training_loss(model, batch)


def without_samples(evaluation: Any) -> None:
    """Drop the evaluation's model, so that the report of rank 0 alone generates no samples from a sharded
    model (every forward needs all ranks): ``predict`` on the run folder generates them."""
    if getattr(evaluation, "model", None) is not None:
        evaluation.model = None
        log.info("FSDP: the report has no generated samples; python -m {{ cookiecutter.package_name }}.predict writes them.")
