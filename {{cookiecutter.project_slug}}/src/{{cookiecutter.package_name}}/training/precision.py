"""Mixed precision: the autocast dtype and loss scaling, resolved against the hardware (``runtime``)."""

from __future__ import annotations

import contextlib
import logging
from contextlib import AbstractContextManager

import torch

from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.runtime import DTYPES, hardware_fallback

log = logging.getLogger(__name__)


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
        log.warning(
            "precision=%s: %s; using %s instead (set precision.strict=true to stop instead).",
            self.name,
            reason,
            replacement,
        )
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

        The caller steps its LR schedule only on True, so skipped steps do not advance it. The scale is
        compared on the device: one host sync (``get_scale()`` twice would be two).
        """
        if not scaler.is_enabled():
            optimizer.step()
            return True
        scale = scaler._scale.clone() if scaler._scale is not None else None
        scaler.step(optimizer)
        scaler.update()
        # the scale drops only when the step was skipped
        return scale is None or bool(scaler._scale is not None and scaler._scale >= scale)

    def __repr__(self) -> str:
        return f"Precision({self.name})"
