"""Precision: autocast dtype, loss scaling only for fp16, capability fallbacks and strict mode."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.runtime import cpu_has_native_bf16
from {{ cookiecutter.package_name }}.train import train
from {{ cookiecutter.package_name }}.training.precision import Precision

from conftest import compose_config

HOST_BF16 = "native-bf16" if cpu_has_native_bf16() else "emulated-bf16"


def test_fp16_uses_a_grad_scaler_and_bf16_does_not() -> None:
    assert Precision("fp16").grad_scaler().is_enabled()
    assert not Precision("bf16").grad_scaler().is_enabled()
    assert not Precision("fp32").grad_scaler().is_enabled()


@pytest.fixture
def native_bf16(monkeypatch: pytest.MonkeyPatch):
    """Pretend the CPU does (True) or does not (False) have bfloat16 instructions."""
    from {{ cookiecutter.package_name }} import runtime as module

    def set_native(value: bool) -> None:
        monkeypatch.setattr(module, "cpu_has_native_bf16", lambda: value)

    return set_native


def test_cpu_fp16_falls_back_to_bf16(native_bf16, caplog: pytest.LogCaptureFixture) -> None:
    native_bf16(True)
    precision = Precision("fp16").resolve(torch.device("cpu"))
    assert precision.name == "bf16" and precision.requested == "fp16"
    assert not precision.grad_scaler().is_enabled()
    assert any("using bf16 instead" in record.getMessage() for record in caplog.records)
    with precision.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_cpu_without_native_bf16_uses_fp32(native_bf16, caplog: pytest.LogCaptureFixture) -> None:
    native_bf16(False)
    assert Precision("bf16").resolve(torch.device("cpu")).name == "fp32"
    assert Precision("fp16").resolve(torch.device("cpu")).name == "fp32"
    assert any("no native bfloat16" in record.getMessage() for record in caplog.records)
    native_bf16(True)
    assert Precision("bf16").resolve(torch.device("cpu")).name == "bf16"


def test_strict_precision_stops_in_one_line() -> None:
    with pytest.raises(UserError) as error:
        Precision("fp16", strict=True).resolve(torch.device("cpu"))
    assert "precision.strict=true" in str(error.value) and "\n" not in str(error.value)


def test_bf16_without_hardware_support_falls_back_to_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    from {{ cookiecutter.package_name }} import runtime as module

    monkeypatch.setattr(module, "bf16_supported", lambda device: False)
    gpu = torch.device("cuda")
    assert Precision("bf16").resolve(gpu).name == "fp16"
    with pytest.raises(UserError, match="precision=fp16"):
        Precision("bf16", strict=True).resolve(gpu)


def test_fp32_autocast_is_a_no_op() -> None:
    with Precision("fp32").resolve(torch.device("cpu")).autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.parametrize("branch", [HOST_BF16])
def test_this_cpu_resolves_bf16_by_its_own_branch(branch: str) -> None:
    """Unforced: the real CPU's branch, named in the test id."""
    precision = Precision("bf16").resolve(torch.device("cpu"))
    expected = torch.bfloat16 if branch == "native-bf16" else torch.float32
    with precision.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == expected


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "emulated-bf16"])
def test_a_bf16_run_trains_on_either_kind_of_cpu(native_bf16, native: bool, tmp_path: Path) -> None:
    native_bf16(native)
    cfg = compose_config(
        ["debug=fast", "trainer.max_steps=2", "precision=bf16", "trainer.device=cpu", "logger=csv"], output_dir=tmp_path
    )
    best = train(cfg)
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["precision"] == ("bf16" if native else "fp32") and summary["global_step"] == 2
    assert best is not None and math.isfinite(best)
