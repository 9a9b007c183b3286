"""CUDA paths simulated on the CPU: resume after the GPU count or the precision changed, ranks that share
a GPU, DDP and a frozen base, bf16 support of the GPU asked about. ``pytest -m gpu`` runs the real thing.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from {{ cookiecutter.package_name }} import runtime
from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.training import checkpoint, distributed
from {{ cookiecutter.package_name }}.training.early_stopping import EarlyStopping
from {{ cookiecutter.package_name }}.training.state import TrainingState


def training_state(scaler_enabled: bool = False) -> TrainingState:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return TrainingState(
        model=model,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
        scaler=torch.amp.GradScaler("cpu", enabled=scaler_enabled),
        early_stopping=EarlyStopping("val/loss", "min"),
        loss_sum=torch.zeros(()),
    )


@pytest.fixture
def four_gpus(monkeypatch: pytest.MonkeyPatch) -> dict[int, torch.Tensor]:
    """Four visible "GPUs", the current one cuda:2; RNG states set per device are recorded (index >= 4 fails
    as torch's ``default_generators[index]`` does)."""
    restored: dict[int, torch.Tensor] = {}

    def set_rng_state(state: torch.Tensor, device: int | str | torch.device = "cuda") -> None:
        index = device if isinstance(device, int) else torch.device(device).index
        index = 2 if index is None else index
        if index >= 4:
            raise IndexError("tuple index out of range")
        restored[index] = state

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.full((16,), 7, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("saved every GPU's RNG state"))
    for module in (torch.cuda, torch.cuda.random):
        monkeypatch.setattr(module, "set_rng_state", set_rng_state)
    return restored


def test_resume_with_fewer_gpus_than_the_checkpoint_has_rng_states(
    four_gpus: dict[int, torch.Tensor], tmp_path: Path
) -> None:
    """Saved on 8 GPUs (one state per GPU, as older checkpoints hold), resumed where 4 are visible."""
    state = training_state()
    path = tmp_path / "last.pt"
    rng = checkpoint.rng_state()
    assert torch.equal(rng["cuda"], torch.full((16,), 7, dtype=torch.uint8))  # this GPU's state only
    rng["cuda"] = [torch.full((16,), index, dtype=torch.uint8) for index in range(8)]
    state.save([path], {}, [rng])

    resumed = training_state()
    resumed.restore(path)
    resumed.apply_pending_rng()
    assert list(four_gpus) == [2] and torch.equal(four_gpus[2], rng["cuda"][2])


def test_resume_restores_this_gpus_rng_state(four_gpus: dict[int, torch.Tensor], tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    training_state().save([path], {})
    resumed = training_state()
    resumed.restore(path)
    resumed.apply_pending_rng()
    assert list(four_gpus) == [2] and torch.equal(four_gpus[2], torch.full((16,), 7, dtype=torch.uint8))


def test_an_old_checkpoint_without_this_gpus_rng_state_warns(
    four_gpus: dict[int, torch.Tensor], caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint.set_cuda_rng_state([torch.zeros(16, dtype=torch.uint8)] * 2)  # saved where 2 GPUs were visible
    assert not four_gpus and "none for cuda:2" in caplog.text


def test_fp16_resumes_from_a_checkpoint_saved_without_loss_scaling(tmp_path: Path) -> None:
    """A bf16 run requeued onto a pre-Ampere GPU (fp16), or a CPU run resumed on a GPU: no scaler state saved."""
    path = tmp_path / "last.pt"
    training_state(scaler_enabled=False).save([path], {})
    assert checkpoint.load_checkpoint(path)["scaler"] == {}
    resumed = training_state(scaler_enabled=True)
    resumed.restore(path)
    assert resumed.scaler.is_enabled() and resumed.scaler.get_scale() == torch.amp.GradScaler("cpu").get_scale()


def test_an_fp16_step_does_not_read_the_scale_back_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """``get_scale()`` is a host sync each time; the skipped-step check compares the scales on the device."""
    from {{ cookiecutter.package_name }}.training.precision import Precision

    monkeypatch.setattr(torch.amp.GradScaler, "get_scale", lambda self: pytest.fail("get_scale() syncs the host"))
    precision, model = Precision("fp16"), torch.nn.Linear(2, 1)
    optimizer, scaler = torch.optim.SGD(model.parameters(), lr=0.1), Precision("fp16").grad_scaler()
    scaler.scale(model(torch.ones(1, 2)).sum()).backward()
    assert precision.optimizer_step(scaler, optimizer) is True
    scaler.scale(model(torch.ones(1, 2)).sum()).backward()
    model.weight.grad.fill_(float("nan"))
    assert precision.optimizer_step(scaler, optimizer) is False


def test_bf16_support_is_the_asked_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuda:0 a V100 (7.0), cuda:1 an A100 (8.0), the current device cuda:1: cuda:0 has no bf16."""
    capability = {0: (7, 0), 1: (8, 0)}
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(
        torch.cuda,
        "get_device_capability",
        lambda device=None: capability[1 if device is None else torch.device(device).index],
    )
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda device=None: type("Properties", (), {"major": capability[device][0]}),
    )
    monkeypatch.setattr(torch.version, "hip", None)
    assert not runtime.bf16_supported(torch.device("cuda", 0))
    assert runtime.bf16_supported(torch.device("cuda", 1))


@pytest.mark.parametrize(
    "processes, gpus, launcher, expected",
    [
        ("2", 1, "torchrun", "gloo"),  # two ranks on one GPU: NCCL would report a duplicate GPU
        ("2", 2, "torchrun", "nccl"),
        ("4", 1, "slurm", "nccl"),  # SLURM binds one GPU to each task: each sees one, and they differ
    ],
)
def test_backend_for_ranks_that_share_a_gpu(
    processes: str,
    gpus: int,
    launcher: str,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", processes)
    if launcher == "torchrun":
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    else:
        monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    gpu = torch.device("cuda", 0)
    assert distributed.choose_backend(gpu) == expected
    assert distributed.choose_backend(torch.device("cpu")) == "gloo"
    if expected == "gloo":
        assert "2 processes share 1 GPU(s)" in caplog.text
        with pytest.raises(UserError, match=r"--nproc_per_node=1\), or use trainer.backend=gloo") as error:
            distributed.choose_backend(gpu, "nccl")
        assert "\n" not in str(error.value)


class TinyLora(torch.nn.Module):
    """A frozen "base" and a trainable "adapter", marked as the loader marks an adapter model."""

    frozen_from_files = True

    def __init__(self) -> None:
        super().__init__()
        self.base, self.adapter = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
        self.base.requires_grad_(False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base(inputs))


def test_ddp_does_not_broadcast_a_lora_models_frozen_base(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        broadcast: list[int] = []
        original = torch.distributed._broadcast_coalesced

        def record(group, tensors, *args, **kwargs):  # noqa: ANN001 - torch's private signature
            broadcast.extend(tensor.numel() for tensor in tensors)
            return original(group, tensors, *args, **kwargs)

        monkeypatch.setattr(torch.distributed, "_broadcast_coalesced", record)
        lora = distributed.wrap(TinyLora(), torch.device("cpu"))
        assert lora.parameters_to_ignore == {"base.weight", "base.bias"}
        assert sum(broadcast) == 4 * 4 + 4  # the adapter only
        plain = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
        plain[0].requires_grad_(False)  # frozen but maybe seeded per rank: still broadcast
        assert distributed.wrap(plain, torch.device("cpu")).parameters_to_ignore == set()
    finally:
        torch.distributed.destroy_process_group()
