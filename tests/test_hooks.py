"""pre_gen refuses bad answers (all at once, leaving nothing behind); post_gen trims and guides."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter

from conftest import TEMPLATE_DIR


def render_fails(tmp_path: Path, capfd: pytest.CaptureFixture, **answers: str) -> str:
    with pytest.raises(FailedHookException):
        cookiecutter(str(TEMPLATE_DIR), no_input=True, extra_context=answers, output_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == [], "a failed render left files behind"
    return capfd.readouterr().err


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({"project_slug": "Bad Slug!"}, "project_slug 'Bad Slug!'"),
        ({"package_name": "class"}, "is a Python keyword"),
        ({"package_name": "match"}, "is a Python keyword"),
        ({"package_name": "torch"}, "would shadow the module 'torch'"),
        ({"package_name": "json"}, "would shadow the module 'json'"),
        ({"package_name": "test"}, "would shadow the module 'test'"),
        ({"package_name": "9lives"}, "not a valid Python identifier"),
        ({"author_email": "not-an-email"}, "author_email"),
        ({"wandb_project": "has space"}, "wandb_project"),
        ({"wandb_entity": "bad/entity"}, "wandb_entity"),
        ({"copyright_year": "this year"}, "copyright_year"),
        ({"quantization": "4bit"}, "choose task=causal-lm or task=both"),
    ],
)
def test_bad_answer_is_refused_with_a_hint(tmp_path: Path, capfd: pytest.CaptureFixture, answers: dict,
                                           message: str) -> None:
    error = render_fails(tmp_path, capfd, **answers)
    assert message in error
    assert "Nothing was written" in error


def test_all_problems_are_reported_at_once(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    error = render_fails(tmp_path, capfd, project_slug="X Y", package_name="torch", author_email="nope",
                         quantization="8bit", wandb_project="fine")
    assert "4 problem(s)" in error
    for fragment in ("project_slug", "shadow", "author_email", "quantization=8bit"):
        assert fragment in error


@pytest.mark.parametrize(
    ("name", "slug", "package"),
    [
        ("My Experiment", "my-experiment", "my_experiment"),
        ("딥러닝 실험", None, None),
        ("Ünïcödé Vision Lab", "unicode-vision-lab", "unicode_vision_lab"),
        ("3D Segmentation", "3d-segmentation", "exp_3d_segmentation"),
        ("🚀🚀", "experiment", "experiment"),
    ],
)
def test_any_project_name_gives_valid_names(tmp_path: Path, name: str, slug: str | None,
                                            package: str | None) -> None:
    project = Path(cookiecutter(str(TEMPLATE_DIR), no_input=True, extra_context={"project_name": name},
                                output_dir=str(tmp_path)))
    packages = [path.name for path in (project / "src").iterdir() if path.is_dir() and path.name != "hydra_plugins"]
    assert len(packages) == 1 and packages[0].isidentifier()
    if slug is not None:
        assert project.name == slug and packages == [package]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", project.name)


def test_hostile_answers_reach_the_hooks_as_data(tmp_path: Path) -> None:
    description = "quotes ''' \"\"\" and \\ backslashes {braces} <tags> & more"
    project = Path(cookiecutter(str(TEMPLATE_DIR), no_input=True, output_dir=str(tmp_path),
                                extra_context={"description": description, "author_name": "O'Brien \"Bob\""}))
    import tomllib

    meta = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert meta["description"] == description
    assert meta["authors"][0]["name"] == "O'Brien \"Bob\""


def test_post_gen_prints_next_steps(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    cookiecutter(str(TEMPLATE_DIR), no_input=True, output_dir=str(tmp_path), extra_context={"env_manager": "pip"})
    out = capfd.readouterr().out
    assert "cd my-experiment" in out and "python -m my_experiment.train" in out and "pip install" in out


def test_git_init_is_opt_in(tmp_path: Path) -> None:
    plain = Path(cookiecutter(str(TEMPLATE_DIR), no_input=True, output_dir=str(tmp_path / "a")))
    assert not (plain / ".git").exists()
    inited = Path(cookiecutter(str(TEMPLATE_DIR), no_input=True, output_dir=str(tmp_path / "b"),
                               extra_context={"git_init": "yes"}))
    assert (inited / ".git").is_dir()


def test_trimming_table_names_only_template_paths() -> None:
    source = (TEMPLATE_DIR / "hooks" / "post_gen_project.py").read_text(encoding="utf-8")
    project = TEMPLATE_DIR / "{{cookiecutter.project_slug}}"
    paths = re.findall(r'"((?:configs|tests|scripts|\.github|src)[^"]*|environment\.yml|\.python-version|LICENSE)"',
                       source)
    paths += [f"src/{{{{cookiecutter.package_name}}}}/{rest}" for rest in re.findall(r'f"\{PKG\}/([^"]+)"', source)]
    missing = [path for path in paths if not (project / path).exists()]
    assert paths and not missing, f"post_gen removes paths the template does not have: {missing}"


def test_every_prompt_has_a_readable_prompt() -> None:
    config = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text(encoding="utf-8"))
    variables = [key for key in config if not key.startswith("_")]
    assert sorted(config["__prompts__"]) == sorted(variables)
