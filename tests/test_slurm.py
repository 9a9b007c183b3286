"""The rendered project's cluster paths on a real one-node SLURM (``make test-slurm``).

Each test submits real jobs (``sbatch``, ``srun``, submitit's launcher) and stops them with real
``scancel`` and ``scontrol``. Two shortcuts, both the cluster's own commands: the time limit's
warning signal is sent with ``scancel --signal`` to the same processes SLURM signals at the
limit (``--signal=USR2`` -> every task; ``B:USR1`` -> the batch shell), so that it arrives
mid-epoch whatever the machine's speed; and a requeued job's ~120 s hold (its BeginTime) is
lifted with ``scontrol update StartTime=now``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import project_env

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
PACKAGE = "my_experiment"
QUICK = ["logger=csv", "trainer.progress_bar=false", "trainer.limit_val_batches=2", "data.num_workers=2"]

HOOKS = f'''
"""Callbacks the SLURM tests add to a run: slow steps, a step marker, a failing rank."""
import time
from pathlib import Path

from {PACKAGE} import runtime
from {PACKAGE}.training.callbacks import Callback


class Probe(Callback):
    def __init__(self, seconds=0.0, marker=None, fail_rank=-1, fail_step=-1):
        self.seconds, self.marker = seconds, marker
        self.fail_rank, self.fail_step = fail_rank, fail_step

    def on_train_step_end(self, trainer, loss):
        time.sleep(self.seconds)
        step = trainer.state.global_step
        if self.marker and trainer.is_main:
            Path(self.marker).write_text(str(step))
        if runtime.rank() == self.fail_rank and step >= self.fail_step:
            raise RuntimeError(f"rank {{runtime.rank()}} fails on purpose at step {{step}}")
'''


@pytest.fixture(scope="module")
def project(render) -> Path:
    return render()


@pytest.fixture()
def env(project: Path, slurm_cluster, tmp_path: Path) -> dict[str, str]:
    return job_env(project, slurm_cluster, tmp_path)


@pytest.fixture(scope="module")
def lm_project(render) -> Path:
    return render(task="causal-lm")


@pytest.fixture()
def lm_env(lm_project: Path, slurm_cluster, tmp_path: Path) -> dict[str, str]:
    return job_env(lm_project, slurm_cluster, tmp_path)


def job_env(project: Path, slurm_cluster, tmp_path: Path) -> dict[str, str]:
    """The environment of a job of ``project``: the cluster's, with the test's callbacks importable."""
    (tmp_path / "slurm_hooks.py").write_text(HOOKS, encoding="utf-8")
    base = project_env(project)
    base["PYTHONPATH"] = os.pathsep.join([str(tmp_path), base["PYTHONPATH"]])
    base["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), base.get("PATH", "")])  # `python` in a job
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        base.pop(name, None)
    return slurm_cluster.env(base)


def probe(marker: Path | None = None, seconds: float = 0.0, **extra: object) -> list[str]:
    options = {"seconds": seconds, **({"marker": marker} if marker else {}), **extra}
    return ["+trainer.callbacks.probe._target_=slurm_hooks.Probe",
            *(f"+trainer.callbacks.probe.{key}={value}" for key, value in options.items())]


def sh(env: dict[str, str], *command: str, cwd: Path | None = None) -> str:
    result = subprocess.run(list(command), env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{command}: {result.stderr}"
    return result.stdout


def job_info(env: dict[str, str], job: str) -> dict[str, str]:
    text = subprocess.run(["scontrol", "show", "job", "-o", job], env=env, capture_output=True, text=True,
                          timeout=30).stdout
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def wait_for(what: str, ready, timeout: float = 240, every: float = 0.5, job: tuple | None = None):
    """Poll ``ready()``; with ``job`` = (env, id, log file), stop early when that job has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        if job and job_info(job[0], job[1]).get("JobState") in ENDED:
            log = job[2].read_text(encoding="utf-8")[-3000:] if job[2].is_file() else ""
            raise AssertionError(f"job {job[1]} ended while waiting for {what}:\n{log}")
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def step_reached(marker: Path, step: int) -> bool:
    return marker.is_file() and marker.read_text().strip().isdigit() and int(marker.read_text()) >= step


def lift_requeue_hold(env: dict[str, str], job: str) -> None:
    """Once the requeued job is pending, let it start in a few seconds instead of after SLURM's ~120 s hold.

    Not at once: slurmd revoked the job's credential when it killed the first run, and refuses a new
    one issued within the same second ("Job credential revoked"), which fails the requeued job.
    """
    wait_for(f"job {job} to be requeued", lambda: job_info(env, job).get("JobState") == "PENDING"
             and int(job_info(env, job).get("Restarts", "0")) >= 1)
    sh(env, "scontrol", "update", f"JobId={job}", "StartTime=now+3")


def weights(path: Path) -> dict:
    import torch

    return torch.load(path, weights_only=True)["model"]


def test_time_limit_through_the_slurm_launcher_requeues_and_resumes_exactly(project: Path, env, tmp_path: Path):
    """2 gloo ranks with 2 data workers each, through hydra/launcher=slurm: USR2 mid-epoch, last.pt, a
    requeue, the same run folder and W&B run id, the multirun's result, and the same final weights as
    an uninterrupted run."""
    marker, sweep = tmp_path / "step", tmp_path / "sweep"
    training = ["trainer=ddp", "trainer.max_epochs=2", *QUICK[1:]]  # W&B (offline): the run id must carry over
    client = subprocess.Popen(
        [sys.executable, "-m", f"{PACKAGE}.train", "-m", "hydra/launcher=slurm", *training,
         "hydra.launcher.gpus_per_node=0", "hydra.launcher.tasks_per_node=2", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=20", f"hydra.sweep.dir={sweep}",
         *probe(marker, seconds=0.4)],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        job = wait_for("the job to run", lambda: sh(env, "squeue", "-h", "-t", "R", "-o", "%i").split())[0]
        wait_for("step 3", lambda: step_reached(marker, 3), timeout=300,
                 job=(env, job, next(iter(sweep.glob(".submitit/*/*_0_log.err")), sweep / "none")))
        sh(env, "scancel", "--signal=USR2", job)  # what SLURM sends every task signal_delay_s before the limit
        lift_requeue_hold(env, job)
        output, _ = client.communicate(timeout=400)
    finally:
        client.kill()
    assert client.returncode == 0, output[-4000:]
    run = sweep / "0"
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "Handing SIGUSR2 to submitit" in log and "Resumed from" in log
    assert "exited unexpectedly" not in output + log
    record = json.loads((run / "provenance.json").read_text(encoding="utf-8"))["launch"]
    assert record["world_size"] == 2 and record["backend"] == "gloo" and record["slurm_restart_count"] == 1
    wandb_runs = [path.name.rsplit("-", 1)[1] for path in (run / "wandb").glob("offline-run-*")]
    assert len(wandb_runs) == 2 and len(set(wandb_runs)) == 1, wandb_runs  # the requeued job continues the run
    assert json.loads((run / "summary.json").read_text(encoding="utf-8"))["test"]
    baseline = tmp_path / "baseline"
    uninterrupted = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
         f"{PACKAGE}.train", *training, *QUICK[:1], f"hydra.run.dir={baseline}"],
        cwd=project, env=project_env(project), capture_output=True, text=True, timeout=600)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    resumed, reference = weights(run / "checkpoints" / "last.pt"), weights(baseline / "checkpoints" / "last.pt")
    assert resumed.keys() == reference.keys()
    assert all(resumed[key].equal(reference[key]) for key in reference)


SRUN_SCRIPT = """#!/bin/bash
#SBATCH --ntasks=2 --cpus-per-task=1
export RANK=0 WORLD_SIZE=1  # left over in the shell: must not make two copies of rank 0
srun python -m {package}.train trainer=ddp {overrides}
"""


def submit_script(env: dict[str, str], project: Path, script: Path, text: str) -> str:
    script.write_text(text, encoding="utf-8")
    log = script.with_suffix(".log")
    return sh(env, "sbatch", "--parsable", f"--output={log}", str(script), cwd=project).strip().split(";")[0]


def test_srun_tasks_are_one_run_and_scancel_term_saves_with_workers(project: Path, env, tmp_path: Path):
    """``srun python -m ... trainer=ddp`` with a stale RANK: one run of world size 2; ``scancel --signal=TERM``
    mid-epoch with 2 data workers per rank writes last.pt, and no worker crashes."""
    marker, run = tmp_path / "step", tmp_path / "run"
    overrides = " ".join(["trainer.max_epochs=3", *QUICK, f"hydra.run.dir={run}", *probe(marker, seconds=0.4)])
    job = submit_script(env, project, tmp_path / "job.sh", SRUN_SCRIPT.format(
        package=PACKAGE, overrides=overrides))
    wait_for("step 3", lambda: step_reached(marker, 3), timeout=300, job=(env, job, tmp_path / "job.log"))
    sh(env, "scancel", "--signal=TERM", job)
    wait_for("the job to end", lambda: job_info(env, job).get("JobState") in {"COMPLETED", "FAILED", "CANCELLED"})
    output = (tmp_path / "job.log").read_text(encoding="utf-8")
    log = (run / "train.log").read_text(encoding="utf-8")
    assert job_info(env, job)["JobState"] == "COMPLETED", output[-3000:]
    assert "DDP: rank 1 of 2 (gloo)" in (run / "train.rank1.log").read_text(encoding="utf-8")
    assert "DDP: rank 0 of 2 (gloo)" in log and "stopped by signal" in log
    assert "exited unexpectedly" not in output + log
    assert (run / "checkpoints" / "last.pt").is_file()
    import torch

    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["global_step"] >= 3


def test_a_failing_rank_ends_every_task_and_fails_the_job(project: Path, env, tmp_path: Path):
    run = tmp_path / "run"
    overrides = " ".join(["trainer.max_epochs=3", *QUICK, f"hydra.run.dir={run}",
                          *probe(seconds=0.1, fail_rank=1, fail_step=2)])
    job = submit_script(env, project, tmp_path / "job.sh", SRUN_SCRIPT.format(
        package=PACKAGE, overrides=overrides))
    wait_for("rank 1 to fail", lambda: "fails on purpose" in (tmp_path / "job.log").read_text(encoding="utf-8")
             if (tmp_path / "job.log").is_file() else False, timeout=300)
    failed_at = time.monotonic()
    state = wait_for("the job to end", lambda: job_info(env, job).get("JobState") in ENDED and
                     job_info(env, job)["JobState"], timeout=120)
    assert (state, time.monotonic() - failed_at < 60) == ("FAILED", True), (tmp_path / "job.log").read_text()[-3000:]


def readme_sbatch_script(project: Path, run_dir: Path, training: list[str]) -> str:
    """The README's batch script, resources scaled to this machine and the run shortened."""
    readme = (project / "README.md").read_text(encoding="utf-8")
    script = next(block for block in re.findall(r"```bash\n(.*?)```", readme, re.S) if "#SBATCH" in block)
    scaled = (script.replace("--gpus-per-node=4 ", "").replace("--cpus-per-task=32", "--cpus-per-task=2")
              .replace("--time=12:00:00", "--time=30:00").replace("--nproc_per_node=4", "--nproc_per_node=2"))
    scaled = scaled.replace("trainer=ddp &", f"trainer=ddp {' '.join([*training, f'hydra.run.dir={run_dir}'])} &")
    assert scaled.count("hydra.run.dir") == 1 and "--nproc_per_node=2" in scaled, scaled
    return scaled


def test_readme_sbatch_script_requeues_at_the_time_limit_and_scancel_cancels(project: Path, env, tmp_path: Path):
    """The README's sbatch recipe: the time-limit signal (B:USR1) saves, requeues and resumes; scancel then
    ends the job as CANCELLED, and it is not requeued."""
    marker, run = tmp_path / "step", tmp_path / "run"
    training = ["trainer.max_epochs=4", *QUICK, *probe(marker, seconds=0.4)]
    job = submit_script(env, project, tmp_path / "job.sh", readme_sbatch_script(project, run, training))
    wait_for("step 3", lambda: step_reached(marker, 3), timeout=300, job=(env, job, tmp_path / "job.log"))
    sh(env, "scancel", "--batch", "--signal=USR1", job)  # what --signal=B:USR1@180 sends the batch shell
    lift_requeue_hold(env, job)
    wait_for("the resumed run", lambda: "Resumed from" in (run / "train.log").read_text(encoding="utf-8"),
             timeout=300, job=(env, job, tmp_path / "job.log"))
    marker.unlink(missing_ok=True)
    wait_for("a step after the resume", lambda: marker.is_file(), timeout=300)
    sh(env, "scancel", job)
    wait_for("the job to end", lambda: job_info(env, job).get("JobState") == "CANCELLED", timeout=120)
    time.sleep(5)
    info = job_info(env, job)
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "1", info
    import torch

    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["global_step"] > 3


def test_srun_fsdp_stop_saves_a_sharded_checkpoint_and_resumes(lm_project: Path, lm_env, tmp_path: Path):
    """``srun python -m ... trainer=fsdp`` on 2 tasks: ``scancel --signal=TERM`` mid-epoch makes every rank
    write its shard of last.dcp; the same script submitted again resumes from it and finishes the run."""
    import torch

    marker, run = tmp_path / "step", tmp_path / "run"
    training = ["experiment=tiny_lm", "precision=fp32", "trainer.max_epochs=2", "trainer.limit_train_batches=6",
                "data.batch_size=4", *QUICK, f"hydra.run.dir={run}"]
    script = SRUN_SCRIPT.replace("trainer=ddp", "trainer=fsdp")
    overrides = " ".join([*training, *probe(marker, seconds=0.4)])
    job = submit_script(lm_env, lm_project, tmp_path / "job.sh", script.format(package=PACKAGE, overrides=overrides))
    wait_for("step 3", lambda: step_reached(marker, 3), timeout=300, job=(lm_env, job, tmp_path / "job.log"))
    sh(lm_env, "scancel", "--signal=TERM", job)
    wait_for("the job to end", lambda: job_info(lm_env, job).get("JobState") in ENDED, timeout=180)
    assert job_info(lm_env, job)["JobState"] == "COMPLETED", (tmp_path / "job.log").read_text()[-3000:]
    last = run / "checkpoints" / "last.dcp"
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata"} <= {path.name for path in last.iterdir()}
    stopped = torch.load(last / "trainer_state.pt", weights_only=True)["global_step"]
    assert 3 <= stopped < 12 and "stopped by signal" in (run / "train.log").read_text(encoding="utf-8")

    job = submit_script(lm_env, lm_project, tmp_path / "again.sh", script.format(
        package=PACKAGE, overrides=" ".join(training)))
    wait_for("the resumed job to end", lambda: job_info(lm_env, job).get("JobState") in ENDED, timeout=400)
    assert job_info(lm_env, job)["JobState"] == "COMPLETED", (tmp_path / "again.log").read_text()[-3000:]
    log = (run / "train.log").read_text(encoding="utf-8")
    assert f"Resumed from {last} at epoch" in log and "FSDP: 2 blocks and the root sharded over 2 ranks" in log
    assert torch.load(last / "trainer_state.pt", weights_only=True)["global_step"] == 12
