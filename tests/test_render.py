"""Render a matrix of answers; check each render's files, syntax, lint and its own tests."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

from conftest import default_answers, run_in
from expected import expected_files

# Every value of every choice appears at least once; interacting pairs are combined.
# Every render runs its whole test suite, slow tests (multi-process, multi-run and compile) included, except
# the renders named in QUICK_ONLY, which skip the tests marked slow: their answers (csv, fp32, pip) change no
# multi-process path that another render does not run whole.
QUICK_ONLY = {"vision-csv-fp32"}
MATRIX = {
    "default": {},
    "vision-csv-fp32": {"logger": "csv", "precision": "fp32", "license": "BSD-3-Clause", "env_manager": "pip",
                        "powershell": "no", "ci": "none", "python_version": "3.12", "project_name": "Vision Lab"},
    "lm-4bit": {"task": "causal-lm", "quantization": "4bit", "precision": "bf16", "logger": "mlflow",
                "python_version": "3.10", "license": "Apache-2.0"},
    "both-8bit": {"task": "both", "quantization": "8bit", "precision": "fp16", "env_manager": "uv",
                  "logger": "tensorboard", "python_version": "3.12", "license": "none"},
}


def answers_for(name: str) -> dict[str, str]:
    return {**default_answers(), **MATRIX[name]}


def package_of(project: Path) -> str:
    return next(path.name for path in (project / "src").iterdir() if path.is_dir() and path.name != "hydra_plugins")


def rendered_files(project: Path) -> set[str]:
    skip = {"__pycache__", ".pytest_cache", ".ruff_cache", "outputs", ".git",
            "mlflow.db", "mlartifacts"}  # what runs write (an MLflow render's local store), not the render
    return {path.relative_to(project).as_posix() for path in project.rglob("*")
            if path.is_file() and not skip & set(path.relative_to(project).parts)}


@pytest.fixture(params=sorted(MATRIX))
def case(request: pytest.FixtureRequest, render) -> tuple[str, Path]:
    return request.param, render(**MATRIX[request.param])


def test_exact_file_set(case: tuple[str, Path]) -> None:
    name, project = case
    expected = expected_files(answers_for(name), package_of(project))
    actual = rendered_files(project)
    assert actual == expected, f"missing: {sorted(expected - actual)}; unexpected: {sorted(actual - expected)}"


def test_no_template_tags_survive(case: tuple[str, Path]) -> None:
    _, project = case
    for relative in rendered_files(project):
        path = project / relative
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        assert "{{ cookiecutter." not in text and "{{cookiecutter." not in text, relative
        assert "{%" not in text and "%}" not in text, relative


def test_yaml_and_toml_parse(case: tuple[str, Path]) -> None:
    _, project = case
    for path in project.rglob("*.y*ml"):
        yaml.safe_load(path.read_text(encoding="utf-8"))
    tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))


def test_ruff_is_clean(case: tuple[str, Path]) -> None:
    _, project = case
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run([sys.executable, "-m", "ruff", *command, "--no-cache", "."], cwd=project,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean(case: tuple[str, Path]) -> None:
    """The package type-checks, as `make lint`, tasks.ps1 lint, pre-commit and the rendered CI run it."""
    _, project = case
    result = run_in(project, "-m", "mypy")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    lint = (project / "Makefile").read_text(encoding="utf-8").split("\nlint:", 1)[1].split("\n\n")[0]
    assert "\t$(PYTHON) -m mypy" in lint
    workflow = project / ".github" / "workflows" / "ci.yml"  # ci=none renders have none
    assert not workflow.exists() or "run: python -m mypy" in workflow.read_text(encoding="utf-8")


# A temp folder as a Korean user name gives it on Windows (C:/Users/김철수/AppData/Local/Temp): Hydra's lexer
# refuses such a path in an unquoted override, so every render's suite runs under one.
KOREAN_TEMP = ("사용자 김철수", "임시 폴더")


@pytest.mark.slow
def test_rendered_project_tests_pass(case: tuple[str, Path], tmp_path: Path) -> None:
    name, project = case
    selection = ["-m", "not slow"] if name in QUICK_ONLY else []
    basetemp = tmp_path.joinpath(*KOREAN_TEMP)
    basetemp.parent.mkdir(parents=True, exist_ok=True)  # pytest makes the basetemp itself, not its parents
    result = run_in(project, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "--basetemp", str(basetemp),
                    *selection, timeout=2400)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


@pytest.mark.slow
def test_a_project_in_a_korean_folder_trains_evaluates_predicts_and_exports(tmp_path: Path) -> None:
    """Rendered under a Korean folder with a space, as into C:/Users/김철수/문서: every command that names a
    path there, typed without quotes, works."""
    from cookiecutter.main import cookiecutter
    from PIL import Image

    from conftest import TEMPLATE_DIR

    parent = tmp_path / "김철수 연구"
    project = Path(cookiecutter(str(TEMPLATE_DIR), no_input=True, output_dir=str(parent)))
    package = package_of(project)
    run_dir = project / "outputs" / "첫 실험"
    train = run_in(project, "-m", f"{package}.train", "debug=fast", "trainer.device=cpu", f"hydra.run.dir={run_dir}")
    assert train.returncode == 0, train.stderr[-3000:]
    evaluate = run_in(project, "-m", f"{package}.evaluate", f"run={run_dir}", f"output={parent / '평가'}")
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert json.loads((parent / "평가" / "eval.json").read_text(encoding="utf-8"))["metrics"]
    images = parent / "새 사진"
    images.mkdir()
    for index in range(3):
        Image.new("L", (8, 8), color=60 * index).save(images / f"숫자 {index}.png")
    predict = run_in(project, "-m", f"{package}.predict", f"run={run_dir}", f"input={images}",
                     f"output={parent / '예측'}")
    assert predict.returncode == 0, predict.stderr[-3000:]
    assert len(list(csv.DictReader(open(parent / "예측" / "predictions.csv", encoding="utf-8")))) == 3
    export = run_in(project, "-m", f"{package}.export", f"run={run_dir}", f"output={parent / '내보내기'}")
    assert export.returncode == 0, export.stderr[-3000:]
    assert (parent / "내보내기" / "model_config.json").is_file()


@pytest.mark.slow
def test_default_render_trains_well(render) -> None:
    project = render()
    run_dir = project / "outputs" / "full"
    result = run_in(project, "-m", f"{package_of(project)}.train", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(run_dir / "metrics.csv", encoding="utf-8")))
    assert max(float(row["val/acc"]) for row in rows) >= 0.9
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["test"]["test/acc"] >= 0.9


def test_csv_render_has_no_wandb(render) -> None:
    """logger=csv leaves no wandb import, config, dependency or ignore rule (WANDB_* env names in tests are fine)."""
    project = render(**MATRIX["vision-csv-fp32"])
    hits = [relative for relative in rendered_files(project)
            if "wandb" in (project / relative).read_text(encoding="utf-8", errors="ignore")]
    assert not hits, f"'wandb' survives in {hits}"


@pytest.mark.parametrize("tracker", ["mlflow", "tensorboard"])
def test_a_render_without_a_tracker_never_names_it(case: tuple[str, Path], tracker: str) -> None:
    """Only the render whose logger answer is the tracker has its code, config, tests, dependency or docs."""
    name, project = case
    hits = [relative for relative in rendered_files(project)
            if tracker in (project / relative).read_text(encoding="utf-8", errors="ignore").lower()]
    if answers_for(name)["logger"] == tracker:
        assert f"configs/logger/{tracker}.yaml" in hits and "pyproject.toml" in hits
    else:
        assert not hits, f"'{tracker}' survives in {hits}"


@pytest.mark.slow
def test_csv_render_trains_and_writes_plots(render) -> None:
    project = render(**MATRIX["vision-csv-fp32"])
    run_dir = project / "outputs" / "csv-plots"
    result = run_in(project, "-m", f"{package_of(project)}.train", "debug=fast", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wandb" not in result.stderr.lower()
    assert {path.name for path in (run_dir / "plots").glob("*.png")} == {
        "learning_curves.png", "confusion_matrix.png", "pr_curves.png"}
    assert not (run_dir / "wandb").exists()


def test_vision_render_has_no_language_model_stack(render) -> None:
    project = render()
    for relative in rendered_files(project) - {"tests/test_layers.py"}:  # it names them to forbid them in src/
        text = (project / relative).read_text(encoding="utf-8", errors="ignore").lower()
        for name in ("transformers", "peft", "bitsandbytes"):
            assert name not in text, f"{relative} mentions {name}"


def test_quantized_render_depends_on_bitsandbytes(render) -> None:
    lm = tomllib.loads((render(**MATRIX["lm-4bit"]) / "pyproject.toml").read_text(encoding="utf-8"))
    assert any(dep.startswith("bitsandbytes") for dep in lm["project"]["dependencies"])
    assert any(dep.startswith("transformers>=5") for dep in lm["project"]["dependencies"])
    plain = tomllib.loads((render(task="causal-lm") / "pyproject.toml").read_text(encoding="utf-8"))
    assert not any(dep.startswith("bitsandbytes") for dep in plain["project"]["dependencies"])
    assert plain["project"]["optional-dependencies"]["quant"] == ["bitsandbytes>=0.45"]


def test_requirements_dev_covers_every_rendered_dependency(case: tuple[str, Path]) -> None:
    """The template's test environment (requirements-dev.txt + TORCH_SPEC) can run every render's tests."""
    _, project = case
    dev = Path(__file__).resolve().parents[1] / "requirements-dev.txt"
    names = {line.split(">")[0].split("=")[0].split("[")[0].strip().lower()
             for line in dev.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")}
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {dep.split(">")[0].split("=")[0].split("[")[0].split(";")[0].strip().lower()
                for dep in pyproject["dependencies"]}
    assert declared - names - {"torch", "torchvision"} == set()
