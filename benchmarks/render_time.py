"""Render time of `cookiecutter --no-input` for the default answers (goal <= 0.5 s).

Measures the in-process render (what a user waits for after cookiecutter has started)
and, for reference, the whole CLI process including Python's start-up.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cookiecutter.main import cookiecutter

from common import TEMPLATE_DIR, interleaved, report, timed


def render_once() -> float:
    output = Path(tempfile.mkdtemp(prefix="bench-render-"))
    try:
        return timed(lambda: cookiecutter(str(TEMPLATE_DIR), no_input=True, output_dir=str(output)))
    finally:
        shutil.rmtree(output)


def cli_once() -> float:
    output = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    command = [sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(output), str(TEMPLATE_DIR)]
    try:
        return timed(lambda: subprocess.run(command, check=True, capture_output=True))
    finally:
        shutil.rmtree(output)


def main() -> None:
    render_once()  # warm the file-system cache
    medians = interleaved({"render": render_once, "cli": cli_once}, repeats=7)
    print(f"cli_process_s={medians['cli']:.3f} (reference: includes interpreter start-up)")
    report("render_time_s", medians["render"], "goal <= 0.5")


if __name__ == "__main__":
    main()
