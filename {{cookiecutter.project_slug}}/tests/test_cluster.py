"""What a CPU machine cannot run, simulated: CUDA checkpoints and devices, SLURM's environment,
preemption signals, failed sweep trials. Tests marked ``gpu`` run the real thing: ``pytest -m gpu``.

No test here assumes the model stays on the CPU: each one also passes on a GPU machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from {{ cookiecutter.package_name }} import runtime
from {{ cookiecutter.package_name }}.config import resolvers
from {{ cookiecutter.package_name }}.config.quoting import path_override
from {{ cookiecutter.package_name }}.training import checkpoint, cluster
from {{ cookiecutter.package_name }}.training.precision import Precision

from conftest import PROJECT_ROOT, TORCHRUN, needs_torchrun, run_command, run_module

TORCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


# ------------------------------------------------------------------ checkpoints across devices
class NotOnTheCpu(torch.Tensor):
    """A tensor that behaves like a CUDA one where it matters: ``.numpy()`` refuses, ``.cpu()`` copies."""

    def numpy(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first.")

    def cpu(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.as_subclass(torch.Tensor).clone()


def on_device(value: Any) -> Any:
    """``value`` with every tensor replaced by a :class:`NotOnTheCpu` one (as ``map_location=cuda`` gives)."""
    if isinstance(value, torch.Tensor):
        return value.clone().as_subclass(NotOnTheCpu)
    if isinstance(value, dict):
        return {key: on_device(item) for key, item in value.items()}
    if isinstance(value, list):
        return [on_device(item) for item in value]
    return value


def test_rng_state_restores_from_tensors_not_on_the_cpu() -> None:
    import numpy as np

    torch.manual_seed(3)
    np.random.seed(3)
    saved = checkpoint.rng_state()
    expected = (torch.rand(4), np.random.rand(4))
    torch.manual_seed(99)
    np.random.seed(99)
    checkpoint.set_rng_state(on_device(saved))
    assert torch.equal(torch.rand(4), expected[0])
    assert np.array_equal(np.random.rand(4), expected[1])


def test_checkpoints_saved_on_a_gpu_load_to_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file whose tensors are tagged ``cuda:0`` (as a GPU run writes it) loads here: to the CPU first."""
    import torch.serialization

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": checkpoint.rng_state()}
    path = tmp_path / "last.pt"
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        checkpoint.save_checkpoint(state, path)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):  # what map_location=<the trainer's device> used to do
            torch.load(path, weights_only=True)
    loaded = checkpoint.load_checkpoint(path)
    tensors = [*loaded["model"].values(), *loaded["optimizer"]["state"][0].values()]
    assert {tensor.device.type for tensor in tensors} == {"cpu"}
    assert {tensor.device.type for tensor in checkpoint.load_weights(path).values()} == {"cpu"}
    checkpoint.set_rng_state(loaded["rng"])
    device = runtime.choose_device("auto")
    target = torch.nn.Linear(3, 2).to(device)
    target_optimizer = torch.optim.AdamW(target.parameters())
    target.load_state_dict(loaded["model"])
    target_optimizer.load_state_dict(loaded["optimizer"])  # moves the moments next to each parameter
    assert target.weight.device.type == device.type
    assert target_optimizer.state_dict()["state"][0]["exp_avg"].device.type == device.type


def test_rng_state_of_this_rank_falls_back_to_rank_zero() -> None:
    states = [{"rank": 0}, {"rank": 1}]
    assert checkpoint.rng_state_of_this_rank({"rng": states[0], "rng_by_rank": states}) == states[0]
    assert checkpoint.rng_state_of_this_rank({"rng": states[1]}) == states[1]  # an older checkpoint


# ------------------------------------------------------------------ precision on GPUs
def test_emulated_bf16_is_not_bf16_support(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pre-Ampere GPUs emulate bfloat16 (torch counts that unless asked not to); the fallback must not."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.version, "hip", None)
    gpu = torch.device("cuda", 0)
    assert not runtime.bf16_supported(gpu)
    assert Precision("bf16").resolve(gpu).name == "fp16"


def test_fp16_steps_with_inf_gradients_do_not_advance_the_schedule() -> None:
    precision = Precision("fp16")  # not resolved: a GradScaler on this machine's CPU, as on a GPU
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = precision.grad_scaler()
    before = model.weight.detach().clone()
    scaler.scale(model(torch.ones(1, 2)).sum()).backward()
    model.weight.grad.fill_(float("inf"))  # an fp16 overflow
    assert precision.optimizer_step(scaler, optimizer) is False
    assert torch.equal(model.weight, before)
    optimizer.zero_grad()
    scaler.scale(model(torch.ones(1, 2)).sum()).backward()
    assert precision.optimizer_step(scaler, optimizer) is True
    assert not torch.equal(model.weight, before)
    assert Precision("fp32").optimizer_step(Precision("fp32").grad_scaler(), optimizer) is True


# ------------------------------------------------------------------ SLURM's environment
def clear_torch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove torch's env:// variables for this test; whatever the code under test exports is undone after it."""
    for key in TORCH_ENV:
        monkeypatch.setenv(key, "unset")
        monkeypatch.delenv(key)


@pytest.mark.parametrize("gpus", [4, 2, 1])
def test_slurm_two_nodes_of_four_tasks(monkeypatch: pytest.MonkeyPatch, gpus: int) -> None:
    """Task 5 of 2 nodes x 4 tasks, with a MASTER_PORT already set: ranks from SLURM, this rank's GPU."""
    clear_torch_env(monkeypatch)
    for key, value in {
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": "8",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
        "SLURM_NODEID": "1",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "MASTER_PORT": "29777",
    }.items():
        monkeypatch.setenv(key, value)
    cluster.adopt_slurm_tasks()
    exported = {key: os.environ[key] for key in TORCH_ENV}
    assert exported == {
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "4",
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": "29777",
    }
    assert runtime.launched_distributed() and resolvers.rank_suffix() == ".rank5"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    expected = torch.device("cuda", 1 % gpus)  # one GPU per task (SLURM binding) -> cuda:0
    assert runtime.choose_device("auto") == expected
    assert runtime.choose_device("cuda") == expected  # no index: this rank's GPU, not set_device(cuda)
    assert runtime.choose_device("cuda:0") == torch.device("cuda", 0)


def test_srun_tasks_replace_a_stale_rank_and_torchrun_keeps_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """``srun -n2 python -m ...`` (no submitit) with RANK=0 WORLD_SIZE=1 left in the shell: SLURM's ranks win."""
    clear_torch_env(monkeypatch)
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.delenv("SLURM_STEP_NODELIST", raising=False)
    for key, value in {
        "SLURM_JOB_ID": "31",
        "SLURM_STEP_NUM_TASKS": "2",
        "SLURM_STEP_TASKS_PER_NODE": "2",
        "SLURM_NODEID": "0",
        "SLURM_PROCID": "1",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_NODELIST": "gpu-a[001,003-004]",
        "RANK": "0",
        "WORLD_SIZE": "1",
    }.items():
        monkeypatch.setenv(key, value)
    cluster.adopt_slurm_tasks()
    assert {key: os.environ[key] for key in TORCH_ENV} == {
        "RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "gpu-a001",
        "MASTER_PORT": str(20000 + 31),
    }
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")  # a single task: stale ranks are dropped
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_TASK_PID", str(os.getpid()))  # srun's task itself, not a process it started
    cluster.adopt_slurm_tasks()
    assert runtime.rank() == 0 and runtime.world_size() == 1 and "RANK" not in os.environ
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")  # srun torchrun: torchrun's ranks stay
    monkeypatch.setenv("RANK", "3")
    cluster.adopt_slurm_tasks()
    assert os.environ["RANK"] == "3"


def test_tasks_per_node_follow_gpus_per_node() -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    def launcher(*overrides: str) -> Any:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
            cfg = compose("train", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)
        return cfg.hydra.launcher

    assert launcher("hydra.launcher.gpus_per_node=4").tasks_per_node == 4
    assert launcher("hydra.launcher.gpus_per_node=0").tasks_per_node == 1
    assert launcher("hydra.launcher.gpus_per_node=4", "hydra.launcher.tasks_per_node=1").tasks_per_node == 1


def test_sweeps_get_their_own_folder_and_study(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hparams_search=optuna", path_override("hydra.sweep.dir", tmp_path / "lr-search")],
            return_hydra_config=True,
        )
        default = compose("train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    assert cfg.hydra.sweeper.study_name == f"{cfg.hydra.job.name}-lr-search"  # train-lr-search from the CLI
    assert cfg.hydra.sweeper.max_failure_rate == 1.0
    folder = Path(default.hydra.sweep.dir).name
    assert folder.count("_") == 2 and len(folder.rsplit("_", 1)[1]) == 6  # <date>_<time>_<microseconds>
    assert default.hydra.sweeper.study_name == f"{default.hydra.job.name}-{folder}"


def test_requeued_slurm_job_finds_its_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An sbatch script running torchrun: the requeued job (same job id) resolves the first start's folder."""
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    first = resolvers.run_folder(str(tmp_path))
    monkeypatch.setattr(resolvers, "_run_time", resolvers._run_time + 3600)  # the requeue starts an hour later
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert resolvers.run_folder(str(tmp_path)) == first
    monkeypatch.setenv("SLURM_JOB_ID", "778")  # another job: its own folder
    assert resolvers.run_folder(str(tmp_path)) != first


# ------------------------------------------------------------------ preemption
@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="no SIGUSR2 on this platform")
def test_requeue_signal_wins_over_an_earlier_sigterm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    pending = cluster.next_stop(None, signal.SIGTERM)
    pending = cluster.next_stop(pending, signal.SIGUSR2)  # used to raise KeyboardInterrupt: no last.pt
    assert pending == signal.SIGUSR2
    assert cluster.next_stop(pending, signal.SIGTERM) == signal.SIGUSR2
    monkeypatch.delenv("SUBMITIT_EXECUTOR")
    with pytest.raises(KeyboardInterrupt):  # Ctrl+C twice at a terminal: stop now
        cluster.next_stop(signal.SIGINT, signal.SIGINT)


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="no SIGUSR2 on this platform")
def test_sigterm_in_a_submitit_job_waits_for_the_requeue_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    with pytest.raises(cluster.Preempted):  # SIGTERM alone (scancel): not a success
        cluster.after_stop(signal.SIGTERM, wait_s=0.3)

    def submitit_requeues(signum: int, frame: object) -> None:
        raise SystemExit(-1)  # what submitit's handler does after `scontrol requeue`

    previous = signal.signal(signal.SIGUSR2, submitit_requeues)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR2))
    try:
        timer.start()
        with pytest.raises(SystemExit):  # USR2 comes while waiting: submitit requeues
            cluster.after_stop(signal.SIGTERM, wait_s=30)
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR2, previous)
    monkeypatch.delenv("SUBMITIT_EXECUTOR")
    cluster.after_stop(signal.SIGTERM)  # outside submitit: a clean end (exit code 0)


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="no SIGUSR2 on this platform")
def test_preempted_without_the_requeue_signal_leaves_no_result(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SLURM preempted the job to requeue it but sent no USR2 (no send_user_signal): the task waits for SLURM
    to end it instead of failing; a requeue signal on a rank other than 0 ends that rank quietly."""
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setattr(cluster, "slurm_job_state", lambda: "PREEMPTED")
    with caplog.at_level("WARNING"), pytest.raises(cluster.Preempted, match="PREEMPTED"):
        cluster.after_stop(signal.SIGTERM, wait_s=0.1, killed_within_s=0.1)
    assert "waiting for SLURM to end this process" in caplog.text
    monkeypatch.setenv("RANK", "1")
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: None)  # submitit's handler returns on rank 1
    try:
        cluster.after_stop(signal.SIGUSR2)
    finally:
        signal.signal(signal.SIGUSR2, previous)


class StopDuringValidation:
    """A validation loader that delivers SIGTERM to the trainer's handler while epoch ``epoch`` is validated."""

    def __init__(self, loader: Any, trainer: Any, epoch: int) -> None:
        self.loader, self.trainer, self.epoch = loader, trainer, epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        for index, batch in enumerate(self.loader):
            if index == 1 and self.trainer.state.epoch == self.epoch and self.trainer.signals.received is None:
                self.trainer.signals._handle(signal.SIGTERM, None)
            yield batch


def test_a_stop_during_validation_saves_and_resumes_exactly(tmp_path: Path) -> None:
    """SIGTERM while validating (a long validation eats SLURM's warning time): last.pt at once, exact resume."""
    pytest.importorskip("{{ cookiecutter.package_name }}.tasks.classification", reason="no classification task here")
    import functools

    from {{ cookiecutter.package_name }}.data.digits import DigitsDataModule
    from {{ cookiecutter.package_name }}.models.mlp import MLP
    from {{ cookiecutter.package_name }}.tasks.classification import ClassificationTask
    from {{ cookiecutter.package_name }}.training.schedulers import cosine
    from {{ cookiecutter.package_name }}.training.trainer import Trainer
    from {{ cookiecutter.package_name }}.utils import seed_everything

    def run(folder: Path, stop_epoch: int | None = None, resume: Path | None = None) -> Trainer:
        seed_everything(0)
        data = DigitsDataModule(batch_size=64, num_workers=0, seed=0)
        info = data.setup()
        task = ClassificationTask()
        task.bind(info)
        trainer = Trainer(
            precision=Precision("fp32"),
            output_dir=folder,
            max_epochs=2,
            limit_train_batches=3,
            limit_val_batches=3,
            progress_bar=False,
            device="cpu",
        )
        if stop_epoch is not None:
            loader = data.loader
            data.loader = lambda split: (
                StopDuringValidation(loader(split), trainer, stop_epoch) if split == "val" else loader(split)
            )
        trainer.fit(
            MLP(info, hidden_dims=(32,), dropout=0.2),
            task,
            data,
            functools.partial(torch.optim.AdamW, lr=1e-2),
            functools.partial(cosine),
            resume=resume,
        )
        return trainer

    reference = run(tmp_path / "reference")
    with pytest.raises(cluster.TrainingInterrupted):
        run(tmp_path / "stopped", stop_epoch=0)
    last = tmp_path / "stopped" / "checkpoints" / "last.pt"
    saved = checkpoint.load_checkpoint(last)
    assert (saved["epoch"], saved["batches_done"], saved["history"]) == (0, 3, [])  # trained, not yet validated
    resumed = run(tmp_path / "stopped", resume=last)
    assert resumed.state.history == reference.state.history
    for name, tensor in reference.state.model.state_dict().items():
        assert torch.equal(tensor, resumed.state.model.state_dict()[name]), name


# ------------------------------------------------------------------ several ranks (slow)
RANKS_PROBE = """
import json, os, sys
from pathlib import Path
import torch
import torch.distributed as dist
from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.training import checkpoint, distributed

dist.init_process_group("gloo")
rank, root = dist.get_rank(), Path(sys.argv[1])
torch.manual_seed(100 + rank)
states = checkpoint.rng_states_of_all_ranks()
if rank == 0:
    checkpoint.save_checkpoint({"model": {}, "rng": states[0], "rng_by_rank": states}, root / "ckpt.pt")
expected = torch.rand(3)
dist.barrier()
torch.manual_seed(0)
checkpoint.set_rng_state(checkpoint.rng_state_of_this_rank(checkpoint.load_checkpoint(root / "ckpt.pt")))
results = {"restored": torch.equal(torch.rand(3), expected), "draw": float(expected[0])}
# Each rank in its own folder: rank 0's holds last.pt, rank 1's does not (no shared file system).
own = root / f"node{rank}"
own.mkdir()
if rank == 0:
    (own / "last.pt").write_bytes(b"")
os.chdir(own)
try:
    distributed.agree_on_resume(lambda: Path("last.pt"), torch.device("cpu"))
    results["resume"] = "agreed"
except UserError as error:
    results["resume"] = str(error)
(root / f"rank{rank}.json").write_text(json.dumps(results))
dist.destroy_process_group()
"""


@pytest.mark.slow
@needs_torchrun
def test_ranks_restore_their_own_rng_and_agree_on_resume(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(RANKS_PROBE, encoding="utf-8")
    result = run_command([*TORCHRUN, str(probe), str(tmp_path)], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(rank["restored"] for rank in ranks)
    assert ranks[0]["draw"] != ranks[1]["draw"], "each rank continues its own random stream"
    assert "which rank 1 cannot read" in ranks[1]["resume"]  # both ranks stop, neither hangs
    assert "which another rank cannot read" in ranks[0]["resume"]


def failing_search(folder: Path) -> Path:
    """The shipped Optuna search, over two monitored metrics of which one does not exist."""
    shipped = PROJECT_ROOT / "configs" / "hparams_search" / "optuna.yaml"
    search = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    search["hydra"]["sweeper"]["params"] = {"task.monitor": "choice(val/loss, val/missing)"}
    target = folder / "hparams_search" / "failing.yaml"
    target.parent.mkdir(parents=True)
    target.write_text("# @package _global_\n" + yaml.safe_dump(search), encoding="utf-8")
    return folder


@pytest.mark.slow
def test_a_failed_trial_does_not_end_the_sweep(tmp_path: Path) -> None:
    """Trials through submitit's local executor: one raises a UserError, the others finish.

    With the sampler's seed (42) the two trials draw val/missing, then val/loss.
    """
    sweep = tmp_path / "sweep"
    result = run_module(
        "train",
        "--config-dir",
        str(failing_search(tmp_path / "configs")),
        "hparams_search=failing",
        "hydra/launcher=local",
        "hydra.sweeper.n_trials=2",
        "task.mode=min",
        "logger=csv",
        "debug=fast",
        path_override("hydra.sweep.dir", sweep),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    finished = [json.loads(path.read_text(encoding="utf-8")) for path in sweep.glob("*/summary.json")]
    failed = re.findall(r"Trial \d+ failed: UserError: monitored metric 'val/missing'", result.stdout + result.stderr)
    assert finished and failed and len(finished) + len(failed) == 2
    assert {summary["monitor"] for summary in finished} == {"val/loss"}
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text(encoding="utf-8"))
    assert results["best_params"] == {"task.monitor": "val/loss"}
    assert results["best_value"] == pytest.approx(finished[0]["best"]["value"])


# ------------------------------------------------------------------ on a GPU (pytest -m gpu)
@pytest.mark.gpu
def test_cuda_fp16_run_resumes(tmp_path: Path) -> None:
    """One epoch in fp16 on the GPU, then resume=auto from its last.pt for a second epoch."""
    common = [
        "logger=csv",
        "trainer.device=cuda",
        "precision=fp16",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "trainer.progress_bar=false",
        path_override("hydra.run.dir", tmp_path),
    ]
    first = run_module("train", "trainer.max_epochs=1", *common)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_module("train", "trainer.max_epochs=2", *common)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resumed from" in second.stderr
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["scaler"]["scale"] > 0
