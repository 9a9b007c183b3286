"""Stop signals: which ones end training at the next step, and what follows once last.pt is saved.

- SIGTERM, SIGINT (Ctrl+C, ``scancel``, SLURM preemption, torchrun forwarding them): save
  ``last.pt`` and exit with code 0. A partition with ``PreemptMode=REQUEUE`` requeues the job
  itself; the requeued job resumes from ``last.pt`` (``resume=auto``, same run folder).
- submitit's signal (``SUBMITIT_PREEMPT_SIGNAL``, USR2 by default), sent by SLURM
  ``signal_delay_s`` before the time limit and on preemption under ``hydra/launcher=slurm``:
  save ``last.pt``, then hand the signal to submitit, which requeues the same job (up to
  ``max_num_timeout`` times after time-outs) and exits.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import torch

from {{ cookiecutter.package_name }} import runtime
from {{ cookiecutter.package_name }}.training import distributed

log = logging.getLogger(__name__)


def requeue_signal() -> int | None:
    """submitit's preemption/time-out signal, where the platform has it (Windows has no USR2)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
    return getattr(signal, f"SIG{name}", None)


def stop_signals() -> tuple[int, ...]:
    """Every signal that makes the trainer save ``last.pt`` at the next step boundary and stop."""
    extra = requeue_signal()
    return (signal.SIGTERM, signal.SIGINT) + ((extra,) if extra not in (None, signal.SIGTERM, signal.SIGINT) else ())


def hand_over(signum: int | None) -> None:
    """Once ``last.pt`` is saved, pass submitit's requeue signal to the handler it installed.

    That handler (present only inside a submitit job) requeues the job and exits; anywhere
    else, and for SIGTERM/SIGINT, nothing happens and the run ends cleanly.
    """
    if signum is None or signum != requeue_signal():
        return
    handler = signal.getsignal(signum)
    if callable(handler):
        log.warning("Handing %s to submitit to requeue the job; it resumes from last.pt.",
                    signal.Signals(signum).name)
        handler(signum, None)


class TrainingInterrupted(Exception):
    """Raised after a stop signal, once ``last.pt`` holds the state to resume from."""

    def __init__(self, message: str, signum: int | None = None) -> None:
        super().__init__(message)
        self.signum = signum


class StopSignals:
    """While entered, turns the :func:`stop_signals` into a flag the loop reads at step boundaries.

    A second signal while the first is pending raises ``KeyboardInterrupt`` at once.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        log.warning("Received %s: saving last.pt at the next step, then stopping.", signal.Signals(signum).name)
        self.received = signum

    def __enter__(self) -> StopSignals:
        for signum in stop_signals():
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def agreed(self, step: int, every: int, device: torch.device) -> bool:
        """Whether any rank received a stop signal; under DDP the ranks compare every ``every`` steps."""
        if runtime.world_size() == 1:
            return self.received is not None
        return step % every == 0 and distributed.any_rank(self.received is not None, device)

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
