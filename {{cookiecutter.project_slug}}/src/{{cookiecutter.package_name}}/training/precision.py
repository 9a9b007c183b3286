"""Mixed precision: autocast dtype, loss scaling and hardware capability checks."""

from __future__ import annotations

import contextlib
import logging
import platform
from contextlib import AbstractContextManager
from pathlib import Path

import torch

from {{ cookiecutter.package_name }}.errors import UserError

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def bf16_supported(device: torch.device) -> bool:
    """Native bfloat16: on CUDA, compute capability 8.0+ (Ampere); older GPUs only emulate it, slowly."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type in {"cpu", "mps"}


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bfloat16 instructions (AVX512-BF16 or AMX); without them torch emulates bf16."""
    if platform.machine().lower() in {"arm64", "aarch64"}:
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="ignore")
    except OSError:  # not Linux: unknown, assume emulated
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def hardware_fallback(name: str, device: torch.device) -> tuple[str, str] | None:
    """The precision to use instead of ``name`` on ``device`` and why, or None when ``name`` suits it.

    CPU: fp16 -> bf16 (fp32 without native bf16); bf16 without native bf16 -> fp32, since emulated
    bf16 autocast is many times slower. GPU without bf16 -> fp16.
    """
    if device.type == "cpu":
        native_bf16 = cpu_has_native_bf16()
        if name == "fp16":
            return ("bf16" if native_bf16 else "fp32"), "float16 autocast on a CPU is ~30x slower"
        if name == "bf16" and not native_bf16:
            return "fp32", "this CPU has no native bfloat16 instructions, so bf16 autocast is emulated and slow"
    elif name == "bf16" and not bf16_supported(device):
        return "fp16", f"this {device.type} device has no bfloat16 support"
    return None


class Precision:
    """``fp32``, ``fp16`` (autocast + GradScaler) or ``bf16`` (autocast, no scaler).

    Call :meth:`resolve` with the training device before use: it checks what the
    hardware supports and falls back (with one warning) unless ``strict``.
    """

    def __init__(self, name: str = "fp32", strict: bool = False, allow_tf32: bool = False) -> None:
        if name not in DTYPES:
            raise UserError(f"precision {name!r} is unknown: use precision=fp32, fp16 or bf16.")
        self.requested = self.name = name
        self.strict = strict
        self.allow_tf32 = allow_tf32
        self.device = torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    def resolve(self, device: torch.device) -> Precision:
        """Adapt to ``device`` (see :func:`hardware_fallback`), warning once, or stop when strict."""
        self.device = device
        fallback = hardware_fallback(self.name, device)
        if fallback is not None:
            self._fall_back(*fallback)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = self.allow_tf32
            torch.backends.cudnn.allow_tf32 = self.allow_tf32
        return self

    def _fall_back(self, replacement: str, reason: str) -> None:
        if self.strict:
            raise UserError(
                f"precision={self.name} was asked for with precision.strict=true, but {reason}: "
                f"use precision={replacement}, or run on hardware that supports it."
            )
        log.warning("precision=%s: %s; using %s instead (set precision.strict=true to stop instead).",
                    self.name, reason, replacement)
        self.name = replacement

    def autocast(self) -> AbstractContextManager:
        """The autocast context for forward passes (a no-op in fp32)."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled only for fp16."""
        return torch.amp.GradScaler(self.device.type, enabled=self.name == "fp16")

    def optimizer_step(self, scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> bool:
        """Step ``optimizer`` through ``scaler``; False when fp16 found inf/NaN gradients and skipped the step.

        The caller steps its LR schedule only on True, so skipped steps do not advance it.
        """
        if not scaler.is_enabled():
            optimizer.step()
            return True
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        return scaler.get_scale() >= scale  # the scale drops only when the step was skipped

    def __repr__(self) -> str:
        return f"Precision({self.name})"
