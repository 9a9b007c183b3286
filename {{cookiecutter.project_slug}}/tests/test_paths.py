"""Paths with Korean letters, spaces or ~, typed without quotes, reach every command.

Hydra's override lexer refuses such values unquoted (``token recognition error at: '김'``). The
commands quote a plain path before Hydra parses it and answer a path inside sweep or list syntax in
one line with the quoted form. A Korean user name on Windows puts pytest's ``tmp_path`` under such a
folder, so the project's own overrides that name a folder go through ``path_override``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from {{ cookiecutter.package_name }} import compare
from {{ cookiecutter.package_name }}.config import quoting, source
from {{ cookiecutter.package_name }}.errors import UserError

from conftest import PACKAGE, PROJECT_ROOT, offline_env, run_module

PATHS = [
    "/home/김철수/exp/outputs/runs/2026-01-01_12-00-00",
    "~/pictures/pets",
    "C:\\Users\\김철수\\AppData\\Local\\Temp\\pytest-of-김철수\\pytest-0\\run",
    "C:\\Users\\김철수\\",  # a trailing backslash
    "/data/my runs/it's here",
    "/tmp/a#b&c!d;e^f=g",
    "C:\\Program Files (x86)\\김철수",
    "\\\\server\\공유\\data",
]


def parsed(argument: str) -> object:
    return OverridesParser.create().parse_override(argument).value()


@pytest.mark.parametrize("path", PATHS)
def test_path_override_reads_back_as_the_same_string(path: str) -> None:
    assert parsed(quoting.path_override("data.root", path)) == path


def test_path_override_writes_a_list_of_paths() -> None:
    assert parsed(quoting.path_override("hydra.searchpath", PATHS[:3])) == PATHS[:3]


@pytest.mark.parametrize("path", PATHS)
def test_a_plain_path_typed_without_quotes_is_quoted(path: str) -> None:
    (argument,) = quoting.quote_paths([f"data.root={path}"])
    assert parsed(argument) == path


def test_what_hydra_reads_as_it_is_stays_as_typed() -> None:
    argv = [
        "-m",
        "--cfg",
        "job",
        "optimizer=adam,sgd",
        "data.root=/data/pets",
        "+tags=[a,b]",
        "~logger",
        "seed=${oc.env:SEED}",
        "data.root='/home/김철수/x'",
        "trainer.max_epochs=3",
        "name=my run",
    ]
    assert quoting.quote_paths(argv) == argv


@pytest.mark.parametrize(
    ("argument", "typed", "value"),
    [
        (
            "data.root=/data/김철수,/data/이영희",
            "data.root='/data/김철수','/data/이영희'",
            ["/data/김철수", "/data/이영희"],
        ),
        ("+data.roots=[~/a,/data/b]", "+data.roots=['~/a',/data/b]", ["~/a", "/data/b"]),
    ],
)
def test_a_path_in_sweep_or_list_syntax_gets_one_line_with_the_quoted_form(
    argument: str, typed: str, value: list[str]
) -> None:
    with pytest.raises(UserError) as error:
        quoting.quote_paths([argument])
    message = str(error.value)
    assert "\n" not in message and "quotes" in message and message.startswith(argument)
    assert f"write {typed} " in message
    override = OverridesParser.create().parse_override(typed)  # what it says to type works
    if override.is_sweep_override():
        assert [parsed(f"key={item}") for item in override.sweep_string_iterator()] == value
    else:
        assert override.value() == value


def test_config_folders_from_the_environment_reach_hydra_quoted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folders = [tmp_path / "김철수 configs", tmp_path / "plain"]
    monkeypatch.setenv(source.ENV_VAR, os.pathsep.join(map(str, folders)))
    (searchpath,) = [item for item in source.user_search_path(["seed=1"]) if item.startswith("hydra.searchpath=")]
    assert parsed(searchpath) == [f"file://{folder.resolve().as_posix()}" for folder in folders]


@pytest.fixture(scope="module")
def korean_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick training run whose folder has Korean letters and a space, typed without quotes."""
    run_dir = tmp_path_factory.mktemp("paths") / "김철수 실험" / "run"
    result = run_module("train", "debug=fast", "trainer.device=cpu", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "checkpoints" / "best.pt").is_file()
    return run_dir


def test_evaluate_takes_korean_run_and_output_folders(korean_run: Path) -> None:
    output = korean_run.parent / "평가 결과"
    result = run_module("evaluate", f"run={korean_run}", f"output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((output / "eval.json").read_text(encoding="utf-8"))["run"] == str(korean_run)


def test_export_takes_a_korean_output_folder(korean_run: Path) -> None:
    output = korean_run.parent / "내보낸 모델"
    result = run_module("export", f"run={korean_run}", f"output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (output / "model_config.json").is_file() or (output / "config.json").is_file()  # an image or an LM model


@pytest.mark.skipif(importlib.util.find_spec(f"{PACKAGE}.inference.images") is None, reason="image classification only")
def test_predict_takes_korean_input_and_output_folders(korean_run: Path) -> None:
    from PIL import Image

    images = korean_run.parent / "새 사진"
    images.mkdir()
    for index in range(2):
        Image.new("L", (8, 8), color=40 * index).save(images / f"숫자 {index}.png")
    output = korean_run.parent / "예측 결과"
    result = run_module("predict", f"run={korean_run}", f"input={images}", f"output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (output / "predictions.csv").read_text(encoding="utf-8").count("숫자") == 2


def test_a_korean_path_in_sweep_syntax_stops_in_one_line(korean_run: Path) -> None:
    folder = korean_run.parent
    result = run_module("train", "-m", f"hydra.sweep.dir={folder}/a,{folder}/b")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "LexerNoViableAltException" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "only inside quotes" in line]
    assert f"write hydra.sweep.dir='{folder}/a','{folder}/b'" in line


def test_a_sweep_samples_korean_folders_as_strings(tmp_path: Path) -> None:
    """Optuna hands a sampled choice back without the quotes it was written with: the trial's override is quoted
    again, so a trial whose value is a Korean folder runs."""
    from hydra_plugins.{{ cookiecutter.package_name }}_optuna.optuna_sweeper import trial_overrides

    overrides = trial_overrides({"paths.log_dir": str(tmp_path / "김철수 로그"), "optimizer.lr": 0.1}, ["seed=1"])
    assert overrides[0] == "seed=1" and [parsed(item) for item in overrides[1:]] == [str(tmp_path / "김철수 로그"), 0.1]


@pytest.mark.skipif(
    importlib.util.find_spec(f"{PACKAGE}.memory") is None,
    reason="memory estimates a language model (task=causal-lm or both)",
)
def test_memory_takes_a_korean_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "메모리 추정"
    result = run_module("memory", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "memory.json").is_file()


def test_compare_takes_korean_folders_and_a_home_output(korean_run: Path) -> None:
    home = korean_run.parent / "홈 폴더"
    env = {**offline_env(), "HOME": str(home), "USERPROFILE": str(home)}
    result = run_module("compare", str(korean_run), "output=~/비교", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (home / "비교" / "comparison.html").is_file()
    quoted_output = korean_run.parent / "따옴표 친 비교"  # as path_override writes it, like the Hydra commands take it
    compare.main([str(korean_run), quoting.path_override("output", quoted_output)])
    assert (quoted_output / "comparison.html").is_file()


def test_doctor_takes_no_path_and_says_so_in_one_line() -> None:
    result = run_module("doctor", "run=/home/김철수/runs")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "doctor takes no options" in result.stdout + result.stderr


def test_the_tests_name_folders_in_overrides_only_through_path_override() -> None:
    """A test that writes f"hydra.run.dir={tmp_path}" breaks for a Korean user name on Windows (tmp_path is under
    C:\\Users\\김철수); every test names folders through path_override (this file types them unquoted on purpose)."""
    written = re.compile(
        r"""f["'](?:hydra\.run\.dir|hydra\.sweep\.dir|hydra\.searchpath|paths\.\w+|data\.root|run|"""
        r"""output|input|resume|init_from|model\.name_or_path)="""
    )
    offenders = [
        f"{path.name}:{number}"
        for path in sorted((PROJECT_ROOT / "tests").glob("*.py"))
        if path.name != "test_paths.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if written.search(line)
    ]
    assert offenders == []
