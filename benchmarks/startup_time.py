"""Start-up: ``python -m my_experiment.train --cfg job`` divided by ``python -c "import torch"``.

Both run as fresh processes, interleaved, so both pay Python's start-up; the ratio shows
what composing and printing the config costs on top of importing torch (goal <= 1.2).
The entry point imports torch and the rest of the package only once training starts.
"""

from __future__ import annotations

import os
import subprocess
import sys

from common import interleaved, render, report, timed

REPEATS = 5


def main() -> None:
    project = render(logger="csv")
    env = dict(os.environ, PYTHONPATH=str(project / "src"), WANDB_MODE="offline", HF_HUB_OFFLINE="1")

    def run(*args: str) -> float:
        return timed(lambda: subprocess.run([sys.executable, *args], cwd=project, env=env, check=True,
                                            capture_output=True))

    medians = interleaved({"torch": lambda: run("-c", "import torch"),
                           "cfg_job": lambda: run("-m", "my_experiment.train", "--cfg", "job")}, repeats=REPEATS)
    print(f"import torch {medians['torch']:.2f} s, --cfg job {medians['cfg_job']:.2f} s")
    report("cfg_job_vs_import_torch_time_ratio", medians["cfg_job"] / medians["torch"], "goal <= 1.2")


if __name__ == "__main__":
    main()
