"""Running on a cluster: SLURM's tasks as torch ranks, stop signals, and ranks that fail together.

SLURM tasks: :func:`adopt_slurm_tasks` turns the tasks of a SLURM job step (``srun -n N``,
``hydra/launcher=slurm``) into torch's ranks; ``train`` calls it before Hydra resolves anything.

Stop signals: which ones end training at the next step, and what follows once last.pt is saved.

- SIGTERM, SIGINT (Ctrl+C, ``scancel``, torchrun forwarding them): save ``last.pt`` at the
  next step (or validation batch) and exit with code 0; a second Ctrl+C stops at once.
- submitit's signal (``SUBMITIT_PREEMPT_SIGNAL``, USR2 by default), sent by SLURM
  ``signal_delay_s`` before the time limit and on preemption under ``hydra/launcher=slurm``:
  save ``last.pt``, then hand the signal to submitit, which requeues the same job (up to
  ``max_num_timeout`` times after time-outs) and exits. It wins over a SIGTERM that came first.
- SIGTERM inside a submitit job: SLURM sends it before the requeue signal, so the job saves,
  then waits up to :data:`REQUEUE_WAIT_S` for that signal with submitit's handlers in place. If
  none comes, a job SLURM preempted to requeue waits to be ended (the requeued job resumes);
  otherwise (``scancel``) it raises :class:`Preempted`: a partial run is never a success.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from {{ cookiecutter.package_name }} import runtime

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ SLURM tasks
TORCH_RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def first_host(node_list: str) -> str:
    """The first host name of a SLURM node list: ``gpu-a[001,003-004],cpu1`` -> ``gpu-a001``."""
    head = node_list.split(",")[0] if "[" not in node_list.split(",")[0] else node_list[: node_list.index("]") + 1]
    if "[" not in head:
        return head
    prefix, ranges = head.split("[", 1)
    return prefix + ranges.rstrip("]").split(",")[0].split("-")[0]


def tasks_on_node(tasks_per_node: str, node: int) -> int:
    """The task count of node ``node`` in SLURM's ``SLURM_STEP_TASKS_PER_NODE`` (``4(x2),3`` -> 4, 4, 3)."""
    counts: list[int] = []
    for item in tasks_per_node.split(","):
        count, _, repeat = item.partition("(x")
        counts += [int(count)] * int(repeat.rstrip(")") or 1)
    return counts[min(node, len(counts) - 1)]


def slurm_task_environment(env: Mapping[str, str]) -> dict[str, str] | None:
    """torch's env:// variables for one task of a SLURM job step of several tasks, else None.

    ``srun`` (and submitit, which starts its tasks with srun) sets ``SLURM_STEP_NUM_TASKS``; the
    batch script itself is no step, and torchrun (``TORCHELASTIC_RUN_ID``) sets its own ranks.
    """
    if "TORCHELASTIC_RUN_ID" in env or int(env.get("SLURM_STEP_NUM_TASKS", "1")) <= 1:
        return None
    job_id = int(env.get("SLURM_JOB_ID", "0"))
    return {
        "RANK": env["SLURM_PROCID"],
        "WORLD_SIZE": env["SLURM_STEP_NUM_TASKS"],
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
        "LOCAL_WORLD_SIZE": str(
            tasks_on_node(env.get("SLURM_STEP_TASKS_PER_NODE", "1"), int(env.get("SLURM_NODEID", "0")))
        ),
        "MASTER_ADDR": first_host(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "127.0.0.1")),
        # a preset MASTER_PORT is kept; else one per job, the same on every task
        "MASTER_PORT": env.get("MASTER_PORT") or str(20000 + job_id % 20000),
    }


def adopt_slurm_tasks() -> None:
    """Inside a SLURM job step of several tasks (``srun -n N``, ``hydra/launcher=slurm``), take the ranks from SLURM.

    Neither srun nor submitit sets torch's RANK/WORLD_SIZE/MASTER_ADDR; without them every task
    would train alone as rank 0 on ``cuda:0``. Values inherited from the submitting shell are
    replaced; a single srun task drops them (one process is rank 0 of 1). torchrun's own values
    are left alone.
    """
    if "SLURM_JOB_ID" not in os.environ or "TORCHELASTIC_RUN_ID" in os.environ:
        return
    adopted = slurm_task_environment(os.environ)
    if adopted is None:
        # only in srun's task itself: a launcher it started (e.g. DeepSpeed's) sets ranks of its own
        itself = os.environ.get("SLURM_TASK_PID") == str(os.getpid()) and "SLURM_STEP_ID" in os.environ
        stale = [name for name in TORCH_RANK_VARIABLES[:4] if name in os.environ and itself]
        if stale:
            log.warning("Ignoring %s inherited by this single SLURM task.", ", ".join(stale))
            for name in stale:
                del os.environ[name]
        return
    os.environ.update(adopted)


# ------------------------------------------------------------------ stop signals
REQUEUE_WAIT_S = 30.0  # SLURM's default KillWait: SIGKILL follows SIGTERM after 30 s


class Preempted(Exception):
    """A submitit job stopped by a signal and not requeued: it is not finished, so it is not a success."""


def requeue_signal() -> int | None:
    """submitit's preemption/time-out signal, where the platform has it (Windows has no USR2)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
    return getattr(signal, f"SIG{name}", None)


def under_submitit() -> bool:
    """True inside a job started by submitit (``hydra/launcher=slurm`` or ``local``)."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


def stop_signals() -> tuple[int, ...]:
    """Every signal that makes the trainer save ``last.pt`` at the next step boundary and stop."""
    extra = requeue_signal()
    return (signal.SIGTERM, signal.SIGINT) + ((extra,) if extra not in (None, signal.SIGTERM, signal.SIGINT) else ())


def next_stop(pending: int | None, signum: int) -> int:
    """The stop signal to act on once ``signum`` arrives while ``pending`` (or nothing) waits.

    The requeue signal wins (SLURM sends SIGTERM, then USR2); under submitit a repeated signal
    changes nothing; elsewhere a second signal (Ctrl+C twice) stops at once without saving.
    """
    if pending is None or signum == requeue_signal():
        return signum
    if under_submitit():
        return pending
    raise KeyboardInterrupt


def hand_over(signum: int | None) -> None:
    """Once ``last.pt`` is saved, pass submitit's requeue signal to the handler it installed.

    That handler (present only inside a submitit job) requeues the job and exits on rank 0;
    anywhere else, and for SIGTERM/SIGINT, nothing happens.
    """
    if signum is None or signum != requeue_signal():
        return
    handler = signal.getsignal(signum)
    if callable(handler):
        log.warning("Handing %s to submitit to requeue the job; it resumes from last.pt.", signal.Signals(signum).name)
        handler(signum, None)


def slurm_job_state() -> str | None:
    """This SLURM job's state as ``scontrol`` reports it now (e.g. ``PREEMPTED``, ``CANCELLED``), else None."""
    job = runtime.slurm_job_id()
    if not job:
        return None
    try:
        result = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"\bJobState=(\S+)", result.stdout)
    return found.group(1) if found else None


COMING_BACK = ("PREEMPTED", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "PENDING")


def after_stop(signum: int | None, wait_s: float = REQUEUE_WAIT_S, killed_within_s: float = 600.0) -> None:
    """What follows a stop once ``last.pt`` is saved and the loggers are closed.

    Outside submitit: return (the run ends with exit code 0). Inside, on the requeue signal:
    rank 0 requeues through submitit (which exits); the other ranks return, and the job's end
    stops them. On a SIGTERM: wait up to ``wait_s`` for the requeue signal; if none comes but
    SLURM preempted the job to requeue it (no ``PreemptParameters=send_user_signal``), wait for
    SLURM to end this process, leaving no result, since the requeued job will write it; else
    (``scancel``) raise :class:`Preempted`.
    """
    hand_over(signum)
    if not under_submitit():
        return
    if signum == requeue_signal():  # submitit's handler returns on ranks other than 0
        log.warning("Rank %d stopped; rank 0 requeues the job.", runtime.rank())
        return
    log.warning(
        "Stopped by %s inside a submitit job: waiting up to %.0f s for the requeue signal.",
        signal.Signals(signum).name if signum else "a signal",
        wait_s,
    )
    _sleep(wait_s)  # submitit's handler requeues and exits from inside sleep()
    state = slurm_job_state()
    if state in COMING_BACK:
        log.warning(
            "SLURM %s this job without the requeue signal: it starts again and resumes from last.pt; "
            "waiting for SLURM to end this process.",
            state.lower(),
        )
        _sleep(killed_within_s)
    raise Preempted(
        f"stopped by a signal before the end and not requeued (SLURM job state: {state}); last.pt "
        "holds the state: resubmit with the same run folder (resume=auto) to continue."
    )


def _sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


class TrainingInterrupted(Exception):
    """Raised after a stop signal, once ``last.pt`` holds the state to resume from."""

    def __init__(self, message: str, signum: int | None = None) -> None:
        super().__init__(message)
        self.signum = signum


class StopSignals:
    """While entered, turns the :func:`stop_signals` into a flag the loop reads at step boundaries.

    Which signal counts when several arrive is :func:`next_stop`'s rule.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._several = False  # several ranks: decided once, so that one process reads a flag per step

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("Received %s: saving last.pt at the next step, then stopping.", signal.Signals(signum).name)
        self.received = next_stop(self.received, signum)

    def __enter__(self) -> StopSignals:
        self._several = runtime.world_size() > 1
        for signum in stop_signals():
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    @property
    def several(self) -> bool:
        """Several ranks: :meth:`agreed` is a collective, so the trainer asks only where it syncs anyway."""
        return self._several

    def agreed(self, device: torch.device) -> bool:
        """Whether any rank received a stop signal: a flag read in one process, one integer all-reduced under DDP."""
        if not self._several:
            return self.received is not None
        from {{ cookiecutter.package_name }}.training import distributed

        return distributed.any_rank(self.received is not None, device)

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


# ------------------------------------------------------------------ failing together
@contextlib.contextmanager
def failing_together() -> Iterator[None]:
    """One of several processes failing ends it at once with exit code 1, so that its job fails.

    Otherwise the other ranks would wait in their next collective until the process group's
    timeout (30 minutes), and under ``hydra/launcher=slurm`` Hydra would report the failed task
    as a success. In a SLURM job step of several tasks (srun, submitit) this process ends the
    whole step; torchrun stops the other workers itself.
    """
    try:
        yield
    except BaseException as error:
        from {{ cookiecutter.package_name }}.errors import user_error_in

        if runtime.world_size() <= 1 or isinstance(error, SystemExit | KeyboardInterrupt):
            raise
        cause = user_error_in(error)
        if cause is not None:
            log.error("%s", cause)
        else:
            log.exception("Rank %d failed; ending it so that the other ranks stop too.", runtime.rank())
        logging.shutdown()
        step = os.environ.get("SLURM_STEP_ID")
        if step is not None and "TORCHELASTIC_RUN_ID" not in os.environ:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    ["scancel", "--signal=KILL", f"{os.environ['SLURM_JOB_ID']}.{step}"],
                    capture_output=True,
                    timeout=30,
                )
        os._exit(1)
