"""How fast a run that cannot work says so: seconds from the call to the one-line error.

Three offline failures, each timed in-process after the imports: a torchvision data set not
on disk (no network), pretrained timm weights not in the cache with ``HF_HUB_OFFLINE=1``,
and a Hugging Face hub id not in the cache. The tests check the messages; the time they
take is measured here. Ends with ``fail_fast_slowest_s=<seconds> (goal <= 5)``.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import render, report


def seconds_to_fail(action: Callable[[], object], error: type[Exception]) -> float:
    started = time.perf_counter()
    try:
        action()
    except error:
        return time.perf_counter() - started
    raise RuntimeError(f"{action} did not fail")


def no_network(*args: object, **kwargs: object) -> socket.socket:
    raise OSError("network is unreachable")


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    render(task="both", quantization="none", logger="csv")
    from my_experiment.data.common import DataInfo
    from my_experiment.data.hf_source import resolve_source
    from my_experiment.data.vision import TorchvisionDataModule
    from my_experiment.errors import UserError
    from my_experiment.models import timm_models

    socket.create_connection = no_network  # as if the machine were offline
    timm_models.cached_weights = lambda hub_id: None  # an empty Hugging Face cache
    with tempfile.TemporaryDirectory() as folder:
        times = {
            "torchvision data set not on disk": seconds_to_fail(
                lambda: TorchvisionDataModule("mnist", data_dir=str(Path(folder))).setup(), UserError),
            "pretrained timm weights offline": seconds_to_fail(
                lambda: timm_models.timm_model(DataInfo(num_classes=3, in_chans=3, img_size=32), "efficientnet_b0",
                                               pretrained=True), UserError),
            "hub id not in the cache": seconds_to_fail(
                lambda: resolve_source("nobody-here/no-such-model-xyz"), UserError),
        }
    for name, seconds in times.items():
        print(f"{name}: {seconds:.2f} s", file=sys.stderr)
    report("fail_fast_slowest_s", max(times.values()), "goal <= 5")


if __name__ == "__main__":
    main()
