"""Runs a list of mistyped commands inside one rendered project, each in a forked child (test_first_hour.py).

``python first_hour_driver.py <package> <cases.json> <results.json>``. Each case is run as ``python -m
<package>.<entry> <args>`` would run it (``runpy`` as ``__main__``, stdout and stderr captured), first
the ones that must answer before torch loads, then, with torch imported once in this process, the
others. In a render with both tasks, it also checks every task, data and model option against each
other in-process. Stdlib and the render's own package only.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import runpy
import sys
import tempfile
import traceback
from pathlib import Path


def run_case(package: str, entry: str, args: list[str]) -> dict:
    """Fork, run the entry point with ``args`` in the child, and return its exit code and output."""
    with tempfile.TemporaryDirectory() as folder:
        out, err, facts = (Path(folder) / name for name in ("out", "err", "facts"))
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 99
            with open(out, "w") as out_file, open(err, "w") as err_file:
                os.dup2(out_file.fileno(), 1)
                os.dup2(err_file.fileno(), 2)
                try:
                    sys.argv = [entry, *args]
                    runpy.run_module(f"{package}.{entry}", run_name="__main__", alter_sys=True)
                    code = 0
                except SystemExit as stop:
                    code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
                except BaseException:  # noqa: BLE001 - what the user would see as a traceback
                    traceback.print_exc()
                facts.write_text(json.dumps({"torch": "torch" in sys.modules}))
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        result = json.loads(facts.read_text()) if facts.exists() else {"torch": None}
        return {**result, "code": os.waitstatus_to_exitcode(status), "stdout": out.read_text(),
                "stderr": err.read_text()}


def fake_run_folder(package: str, root: Path) -> Path:
    """A run folder as training leaves it (saved config, checkpoint files), for the option checks of
    evaluate/predict/export, which all answer before any weights are read."""
    config_source = importlib.import_module(f"{package}.config.source")
    from omegaconf import OmegaConf

    folder = root / "run"
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(config_source.compose("train", []), folder / ".hydra" / "config.yaml")
    (folder / "checkpoints").mkdir()
    for name in ("best", "last"):
        (folder / "checkpoints" / f"{name}.pt").write_bytes(b"")
    return folder


def option_fits(package: str) -> list[dict]:
    """Every task x data x model combination of this render: does check_fit refuse exactly the mixed ones?"""
    config_source = importlib.import_module(f"{package}.config.source")
    checks = importlib.import_module(f"{package}.config.checks")
    errors = importlib.import_module(f"{package}.errors")
    groups = {group: sorted(path.stem for path in (Path("configs") / group).glob("*.yaml"))
              for group in checks.FIT_GROUPS}
    results = []
    for options in itertools.product(*groups.values()):
        choices = dict(zip(groups, options, strict=True))
        cfg = config_source.compose("train", [f"{group}={option}" for group, option in choices.items()])
        purposes = {checks.purpose_of(cfg[group]["_target_"]) for group in groups}
        try:
            checks.check_fit(cfg, choices)
            message = None
        except errors.UserError as error:
            message = str(error)
        results.append({"choices": choices, "mixed": len(purposes) > 1, "message": message})
    return results


def main() -> None:
    package, cases_file, results_file = sys.argv[1:4]
    cases = json.loads(Path(cases_file).read_text())
    with tempfile.TemporaryDirectory() as scratch:
        run = fake_run_folder(package, Path(scratch)) if any("{run}" in " ".join(case["args"]) for case in cases) \
            else None
        fits = option_fits(package) if all((Path("configs") / group).is_dir() for group in ("task", "data")) \
            and len(list((Path("configs") / "task").glob("*.yaml"))) > 1 else []
        results: dict[int, dict] = {}
        for heavy in (False, True):
            if heavy:
                import torch  # noqa: F401 - loaded once here, so that each forked case need not
            for index, case in enumerate(cases):
                if case["heavy"] != heavy:
                    continue
                args = [arg.format(run=run, out=Path(scratch) / f"out{index}") for arg in case["args"]]
                results[index] = run_case(package, case["entry"], args)
    Path(results_file).write_text(json.dumps({"cases": [results[index] for index in range(len(cases))],
                                              "fits": fits}))


if __name__ == "__main__":
    main()
