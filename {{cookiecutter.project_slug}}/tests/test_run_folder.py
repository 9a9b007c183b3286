"""After training: provenance in the run folder, evaluate from it, the doctor's report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.config.quoting import path_override

from conftest import run_module


def test_run_folder_records_its_provenance(smoke_run: Path) -> None:
    record = json.loads((smoke_run / "provenance.json").read_text(encoding="utf-8"))
    assert record["command"]["entry"].endswith(".train") and "debug=fast" in record["command"]["overrides"]
    assert record["versions"]["torch"] and record["versions"]["python"] and record["versions"]["hydra"]
    assert record["hardware"]["cpu"] and isinstance(record["hardware"]["gpus"], list)
    precision = record["precision"]
    assert precision["resolved"] in {"fp32", "fp16", "bf16"} and precision["requested"]
    assert (precision["fallback"] is None) == (precision["requested"] == precision["resolved"])
    assert record["seed"] == 42 and record["status"] == "completed"
    assert record["started_at"] <= record["ended_at"]
    assert "diff" not in record["git"]


def test_summary_paths_are_relative_to_the_run_folder(smoke_run: Path) -> None:
    summary = json.loads((smoke_run / "summary.json").read_text(encoding="utf-8"))
    for path in summary["checkpoints"].values():
        assert not Path(path).is_absolute() and (smoke_run / path).is_file()


def test_git_state_keeps_the_diff_of_a_dirty_checkout(tmp_path: Path) -> None:
    from {{ cookiecutter.package_name }}.tracking import provenance

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True
        )

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("commit", "-qm", "first")
    clean = provenance.git_state(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False and clean["diff"] is None
    (tmp_path / "code.py").write_text("x = 2\n")
    record = provenance.collect(code_dir=tmp_path)
    run = tmp_path / "run"
    provenance.write(run, record)
    assert json.loads((run / "provenance.json").read_text())["git"] == {"commit": clean["commit"], "dirty": True}
    assert "+x = 2" in (run / "git.diff").read_text()


def test_evaluate_reproduces_the_test_numbers(smoke_run: Path) -> None:
    result = run_module("evaluate", path_override("run", smoke_run))
    assert result.returncode == 0, result.stderr[-3000:]
    (output,) = (smoke_run / "eval").iterdir()
    evaluated = json.loads((output / "eval.json").read_text(encoding="utf-8"))
    tested = json.loads((smoke_run / "summary.json").read_text(encoding="utf-8"))["test"]
    assert evaluated["checkpoint"] == "checkpoints/best.pt" and evaluated["split"] == "test"
    assert set(evaluated["metrics"]) == set(tested)
    for key, value in tested.items():
        assert evaluated["metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert (output / "evaluate.log").is_file()


def test_evaluate_other_split_and_checkpoint(smoke_run: Path, tmp_path: Path) -> None:
    result = run_module(
        "evaluate", path_override("run", smoke_run), "ckpt=last", "split=val", path_override("output", tmp_path)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval.json").read_text(encoding="utf-8"))
    assert evaluated["checkpoint"] == "checkpoints/last.pt"
    assert evaluated["metrics"] and all(key.startswith("val/") for key in evaluated["metrics"])


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["run={tmp}"], ".hydra/config.yaml"),
        (["run={smoke}", "ckpt=nope"], "nope"),
        (["run={smoke}", "no_such_key=1"], "no_such_key"),
        (["ckpt=best"], "run="),
    ],
)
def test_evaluate_bad_input_fails_in_one_line(
    arguments: list[str], named: str, smoke_run: Path, tmp_path: Path
) -> None:
    result = run_module("evaluate", *(arg.format(tmp=tmp_path, smoke=smoke_run) for arg in arguments))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and named in result.stderr


def test_doctor_answers_in_one_screen() -> None:
    result = run_module("doctor")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) < 30
    for question in ("GPU?", "bf16?", "compile?"):
        assert any(line.startswith(question) for line in lines), question
    assert "torch " in result.stdout
