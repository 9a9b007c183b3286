"""Precision: autocast dtype, loss scaling only for fp16, capability fallbacks and strict mode."""

from __future__ import annotations

import pytest
import torch

from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.training.precision import Precision


def test_fp16_uses_a_grad_scaler_and_bf16_does_not() -> None:
    assert Precision("fp16").grad_scaler().is_enabled()
    assert not Precision("bf16").grad_scaler().is_enabled()
    assert not Precision("fp32").grad_scaler().is_enabled()


def test_cpu_fp16_falls_back_to_bf16(caplog: pytest.LogCaptureFixture) -> None:
    precision = Precision("fp16").resolve(torch.device("cpu"))
    assert precision.name == "bf16" and precision.requested == "fp16"
    assert not precision.grad_scaler().is_enabled()
    assert any("using bf16 instead" in record.getMessage() for record in caplog.records)
    with precision.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_strict_precision_stops_in_one_line() -> None:
    with pytest.raises(UserError) as error:
        Precision("fp16", strict=True).resolve(torch.device("cpu"))
    assert "precision.strict=true" in str(error.value) and "\n" not in str(error.value)


def test_bf16_without_hardware_support_falls_back_to_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    from {{ cookiecutter.package_name }}.training import precision as module

    monkeypatch.setattr(module, "bf16_supported", lambda device: False)
    assert Precision("bf16").resolve(torch.device("cpu")).name == "fp16"
    with pytest.raises(UserError, match="precision=fp16"):
        Precision("bf16", strict=True).resolve(torch.device("cpu"))


def test_fp32_autocast_is_a_no_op() -> None:
    with Precision("fp32").resolve(torch.device("cpu")).autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
