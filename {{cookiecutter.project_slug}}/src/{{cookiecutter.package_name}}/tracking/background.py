"""A worker thread that runs a tracker's network calls in order, so the training loop never waits on them."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Background:
    """Runs a tracker's calls in order on one worker thread, so the training loop never waits on them.

    A full queue drops calls (with one warning) rather than block training.
    """

    def __init__(self, label: str, size: int = 10_000) -> None:
        self.label = label
        self.queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue(maxsize=size)
        self.dropped = self.failed = 0
        self.thread = threading.Thread(target=self._work, name=f"{label}-logger", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        while (item := self.queue.get()) is not None:
            func, args = item
            try:
                func(*args)
            except Exception as error:  # noqa: BLE001 - a tracking failure must not stop training
                self.failed += 1
                if self.failed == 1:
                    log.warning("%s: %s failed: %s", self.label, getattr(func, "__name__", func), error)

    def submit(self, func: Callable[..., Any], *args: Any) -> None:
        try:
            self.queue.put_nowait((func, args))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("%s: the logging queue is full; dropping entries instead of slowing training.", self.label)

    def close(self, timeout: float) -> None:
        """Finish what is queued (waiting at most ``timeout`` seconds), then stop the worker."""
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self.thread.join(timeout)
