"""A newcomer's first hour: what people mistype, in each task's render, answers in one line with a fix.

Each case is a command as a user types it (a misspelled key or option, a task, data and model that do not
fit). It must exit 1 with one line on stderr naming the fix, never a traceback or a silent wrong
result; the ones about keys and options answer before torch loads. The cases of one render run in one
process (first_hour_driver.py forks a child per case), so the whole list costs a few imports.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from test_render import MATRIX, package_of

from conftest import project_env

DRIVER = Path(__file__).with_name("first_hour_driver.py")
HYDRA = "hydra.run.dir={out}"  # keeps each case's Hydra folder out of the shared render


class Case(NamedTuple):
    entry: str
    args: tuple[str, ...]
    expect: str  # a piece of the one line: the suggestion or the fix
    heavy: bool = False  # answers only after torch loads (a check that imports the target, or evaluate & co.)


TRAIN_TYPOS = [
    Case("train", ("trainer.max_epoch=3", HYDRA), "did you mean trainer.max_epochs"),
    Case("train", ("optimizer=adamm", HYDRA), "did you mean adam or adamw?"),
    Case("train", ("optimzer=sgd", HYDRA), "did you mean optimizer?"),
    Case("train", ("optimzer.lr=0.1", HYDRA), "did you mean optimizer.lr"),
    Case("train", ("data.batchsize=32", HYDRA), "did you mean data.batch_size"),
    Case("train", ("scheduler=cosin", HYDRA), "did you mean cosine?"),
    Case("train", ("precision=bf61", HYDRA), "The options are bf16, fp16, fp32"),
    Case("train", ("debug=fsat", HYDRA), "did you mean fast?"),
    Case("train", ("experment=mlp", HYDRA), "did you mean experiment?"),
    Case("train", ("trainer.early_stoping.patience=3", HYDRA), "did you mean trainer.early_stopping.patience"),
    Case("train", ("+trainer.max_epoch=3", HYDRA), "did you mean max_epochs", heavy=True),
    Case("train", ("+optimizer.learning_rate=0.01", HYDRA), "It takes params, lr", heavy=True),
]
RUN_FOLDER_TYPOS = [
    Case("evaluate", ("run={run}", "splt=val"), "did you mean split?", heavy=True),
    Case("evaluate", ("run={run}", "ckp=last"), "did you mean ckpt?", heavy=True),
    Case("evaluate", ("run={run}", "sede=3"), "did you mean seed", heavy=True),
    Case("evaluate", ("run={run}", "data.batchsize=8"), "did you mean data.batch_size", heavy=True),
    Case("predict", ("run={run}", "inpt=photos"), "did you mean input?", heavy=True),
    Case("export", ("run={run}", "formt=onnx"), "did you mean format?", heavy=True),
    Case("doctor", ("--verbose",), "doctor takes no options", heavy=True),
]
IMAGE_CASES = [
    *TRAIN_TYPOS,
    Case("train", ("model=mpl", HYDRA), "did you mean mlp?"),
    Case("train", ("data=digit", HYDRA), "did you mean digits?"),
    Case("evaluate", ("run={run}", "modle=vit"), "did you mean model?", heavy=True),
    *RUN_FOLDER_TYPOS,
]
LM_CASES = [
    Case("train", ("experiment=tiny_llm", HYDRA), "did you mean tiny_lm?"),
    Case("train", ("quantisation=4bit", HYDRA), "did you mean quantization?"),
    Case("train", ("model.name_or_pth=gpt2", HYDRA), "did you mean model.name_or_path"),
    Case("train", ("data.blocksize=32", HYDRA), "did you mean data.block_size"),
    Case("train", ("model.lora.rank=4", HYDRA), "did you mean model.lora.r"),
    Case("memory", ("quantization=4bits", HYDRA), "did you mean 4bit"),
    Case("memory", ("model.name_or_pth=gpt2", HYDRA), "did you mean model.name_or_path"),
    Case("predict", ("run={run}", "max_new_token=8"), "did you mean max_new_tokens?", heavy=True),
    Case("predict", ("run={run}", "temprature=0.7"), "did you mean temperature?", heavy=True),
    Case("export", ("run={run}", "merge_lora=flase"), "merge_lora", heavy=True),
]
BOTH_CASES = [
    Case("train", ("model=causal_lm", "debug=fast", HYDRA), "for a language model use experiment=tiny_lm"),
    Case("train", ("data=text", HYDRA), "data=text is for a language model"),
    Case("train", ("experiment=tiny_lm", "data=digits", HYDRA), "data=digits is for image classification"),
    Case("train", ("task=causal_lm", HYDRA), "task=causal_lm is for a language model"),
    Case("train", ("experiment=tiny_lm", "model=vit", HYDRA), "model=vit is for image classification"),
    Case("train", ("model=causal_lm", "data=text", HYDRA), "task=classification is for image classification"),
    Case("memory", ("data=digits", HYDRA), "data=digits is for image classification"),
    Case("evaluate", ("run={run}", "data=text"), "data=text is for a language model", heavy=True),
    *TRAIN_TYPOS[:4],
    *RUN_FOLDER_TYPOS[:2],
]
RENDERS = {"default": IMAGE_CASES, "lm-4bit": LM_CASES, "both-8bit": BOTH_CASES}


def run_driver(project: Path, cases: list[Case], tmp_path: Path) -> dict:
    cases_file, results_file = tmp_path / "cases.json", tmp_path / "results.json"
    cases_file.write_text(json.dumps([case._asdict() for case in cases]))
    result = subprocess.run([sys.executable, str(DRIVER), package_of(project), str(cases_file), str(results_file)],
                            cwd=project, env=project_env(project), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(results_file.read_text())


@pytest.fixture(scope="module", params=sorted(RENDERS))
def outcome(request: pytest.FixtureRequest, render, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[list[Case], dict]:
    cases = RENDERS[request.param]
    return cases, run_driver(render(**MATRIX[request.param]), cases, tmp_path_factory.mktemp(request.param))


def test_enough_cases() -> None:
    assert sum(len(cases) for cases in RENDERS.values()) >= 20
    assert all(len(cases) >= 10 for cases in RENDERS.values())


def test_each_mistake_gets_one_line_with_its_fix(outcome: tuple[list[Case], dict]) -> None:
    cases, results = outcome
    wrong = []
    for case, result in zip(cases, results["cases"], strict=True):
        lines = result["stderr"].strip().splitlines()
        if result["code"] != 1 or len(lines) != 1 or "Traceback" in result["stderr"] or case.expect not in lines[0]:
            wrong.append(f"{case.entry} {' '.join(case.args)} -> exit {result['code']}: {result['stderr'][-600:]}")
        elif not case.heavy and result["torch"]:
            wrong.append(f"{case.entry} {' '.join(case.args)} imported torch before answering")
    assert not wrong, "\n".join(wrong)


def test_every_mixed_task_data_and_model_is_refused(outcome: tuple[list[Case], dict]) -> None:
    cases, results = outcome
    if cases is not BOTH_CASES:
        assert not any(fit["mixed"] for fit in results["fits"])  # one purpose: nothing can be mixed
        return
    fits = results["fits"]
    assert len(fits) >= 50 and sum(fit["mixed"] for fit in fits) >= 30
    for fit in fits:
        assert (fit["message"] is not None) == fit["mixed"], fit
        if fit["mixed"]:
            assert "\n" not in fit["message"] and re.search(r"use experiment=tiny_lm", fit["message"]), fit


def test_a_new_key_still_works_with_a_plus(render) -> None:
    project = render(**MATRIX["default"])
    result = subprocess.run([sys.executable, "-m", f"{package_of(project)}.train", "+notes=first try", "--cfg", "job"],
                            cwd=project, env=project_env(project), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "notes: first try" in result.stdout


def test_help_reads_as_plain_text(render) -> None:
    project = render(**MATRIX["default"])
    result = subprocess.run([sys.executable, "-m", f"{package_of(project)}.evaluate", "--help"], cwd=project,
                            env=project_env(project), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "split=test|val|train" in result.stdout and "``" not in result.stdout
